// Flywheel dashboards: a single page app over the JSON API of
// `flywheel-dashboards` (dashboards/API.md). Plain JS, no build step, no
// framework; charts with the vendored uPlot or small hand-drawn canvases.
// Every string from the API goes into the DOM as text (textContent / text
// nodes), never as HTML: it comes from tenants.
'use strict';

(() => {
  const DASH = '–';
  const TOKEN_KEY = 'flywheel.token';
  const THEME_KEY = 'flywheel.theme';
  const FILTER_KEYS = ['range', 'from', 'to', 'route', 'variant', 'model', 'provider', 'tenant'];
  const RANGES = { '1h': 3600e3, '6h': 6 * 3600e3, '24h': 24 * 3600e3, '7d': 7 * 24 * 3600e3 };
  const PAGES = {
    overview: { title: 'Overview', render: pageOverview },
    latency: { title: 'Latency', render: pageLatency },
    reliability: { title: 'Reliability', render: pageReliability },
    quality: { title: 'Quality', render: pageQuality },
    experiments: { title: 'Experiments', render: pageExperiments, admin: true },
    training: { title: 'Training', render: pageTraining, admin: true },
    playground: { title: 'Playground', render: pagePlayground },
  };

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    session: null,
    gen: 0,
    charts: [],
    filters: null,
    filtersKey: '',
  };

  // ------------------------------------------------------------------ DOM

  /** el('div', {class: 'x', onclick: fn, dataset: {a: 1}}, 'text', child, [more]) */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v == null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k === 'dataset') Object.assign(e.dataset, v);
        else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
        else if (k === 'value') e.value = v;
        else if (v === true) e.setAttribute(k, '');
        else e.setAttribute(k, String(v));
      }
    }
    appendAll(e, children);
    return e;
  }
  function appendAll(parent, children) {
    for (const c of children) {
      if (c == null || c === false) continue;
      if (Array.isArray(c)) appendAll(parent, c);
      else if (c instanceof Node) parent.appendChild(c);
      else parent.appendChild(document.createTextNode(String(c)));
    }
  }
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  // ----------------------------------------------------------- formatting

  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
  const stripZeros = (s) => (s.includes('.') ? s.replace(/\.?0+$/, '') : s);

  function fmtUSD(v) {
    if (!isNum(v)) return DASH;
    if (v === 0) return '$0';
    const a = Math.abs(v);
    const sign = v < 0 ? '-' : '';
    let t;
    if (a >= 1000) t = a.toLocaleString('en-US', { maximumFractionDigits: 0 });
    else if (a >= 1) t = a.toFixed(2);
    else if (a >= 0.01) t = a.toFixed(Math.min(12, -Math.floor(Math.log10(a)) + 2));
    else t = a.toFixed(Math.min(12, -Math.floor(Math.log10(a)) + 1));
    return sign + '$' + t;
  }
  function fmtCount(v) {
    if (!isNum(v)) return DASH;
    const a = Math.abs(v);
    const short = (x) => stripZeros(x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
    if (a >= 1e9) return short(v / 1e9) + 'B';
    if (a >= 1e6) return short(v / 1e6) + 'M';
    if (a >= 1e4) return short(v / 1e3) + 'k';
    if (Number.isInteger(v)) return v.toLocaleString('en-US');
    return fmtNum(v);
  }
  function fmtNum(v, digits = 3) {
    if (!isNum(v)) return DASH;
    if (v === 0) return '0';
    const a = Math.abs(v);
    if (a >= 1e6) return fmtCount(v);
    if (a >= 1000) return v.toLocaleString('en-US', { maximumFractionDigits: 0 });
    if (a < 1e-4) return v.toExponential(1);
    return stripZeros(v.toFixed(Math.max(0, digits - 1 - Math.floor(Math.log10(a)))));
  }
  function fmtMs(v) {
    if (!isNum(v)) return DASH;
    const a = Math.abs(v);
    if (a === 0) return '0 ms';
    if (a < 1) return v.toFixed(2) + ' ms';
    if (a < 10) return v.toFixed(1) + ' ms';
    if (a < 1000) return v.toFixed(0) + ' ms';
    if (a < 60000) return (v / 1000).toFixed(a < 10000 ? 2 : 1) + ' s';
    return (v / 60000).toFixed(1) + ' min';
  }
  function fmtPct(v) {
    if (!isNum(v)) return DASH;
    const p = v * 100;
    const a = Math.abs(p);
    if (a === 0) return '0%';
    if (a < 0.1) return stripZeros(p.toPrecision(2)) + '%';
    if (a < 10) return p.toFixed(2) + '%';
    if (a < 100) return p.toFixed(1) + '%';
    return p.toFixed(0) + '%';
  }
  function fmtPercentPoints(v) { return isNum(v) ? stripZeros(v.toFixed(2)) + '%' : DASH; }
  function fmtP(v) { return isNum(v) ? (v < 1e-4 ? '<0.0001' : v.toFixed(4)) : DASH; }
  const pad2 = (n) => String(n).padStart(2, '0');
  function fmtTime(ms, withSeconds = true) {
    if (!isNum(ms)) return DASH;
    const d = new Date(ms);
    const s = `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
    return withSeconds ? s + ':' + pad2(d.getSeconds()) : s;
  }
  function fmtDuration(ms) {
    if (!isNum(ms)) return DASH;
    const m = ms / 60000;
    if (m < 60) return `${stripZeros(m.toFixed(1))} min`;
    const h = m / 60;
    if (h < 48) return `${stripZeros(h.toFixed(1))} h`;
    return `${stripZeros((h / 24).toFixed(1))} d`;
  }
  function fmtValue(v) {
    if (v == null) return DASH;
    if (typeof v === 'boolean') return v ? 'yes' : 'no';
    if (isNum(v)) return fmtNum(v);
    if (Array.isArray(v)) return v.length ? v.map((x) => (typeof x === 'object' ? JSON.stringify(x) : String(x))).join(', ') : DASH;
    if (typeof v === 'object') return JSON.stringify(v);
    return String(v);
  }

  /** A formatter chosen by a column's name (API field names are regular). */
  function fmtFor(key) {
    const k = key.toLowerCase();
    if (/(^|_)(ts|at|t)_ms$|^(started|updated|created)_ms$/.test(k)) return (v) => fmtTime(v);
    if (k.endsWith('_percent')) return fmtPercentPoints;
    if (k.includes('p_value')) return fmtP;
    if (k.includes('per_dollar') || k === 'learning_rate') return fmtNum;
    if (k.includes('cost') || k.includes('usd')) return fmtUSD;
    if (k.includes('rate')) return fmtPct;
    if (/^(p\d\d|ttft_|overhead_|latency)/.test(k) || k.endsWith('_latency_ms')) return fmtMs;
    if (/(^|_)(requests|n|count|tokens|attempts|graded|successes|errors|retries|fallbacks|failovers|failures|quality_n|step)$/.test(k) || k.endsWith('_tokens')) return fmtCount;
    return fmtValue;
  }
  function isNumericColumn(rows, key) {
    return rows.some((r) => isNum(r[key])) && rows.every((r) => r[key] == null || isNum(r[key]));
  }
  const labelFor = (key) => (/^(ts|t|at)_ms$/.test(key) ? 'time' : key.replace(/_ms$/, '').replace(/_/g, ' '));

  // --------------------------------------------------------- URL / state

  function parseHash() {
    const h = location.hash.replace(/^#/, '');
    const [path, query] = h.split('?');
    const parts = (path || '').split('/').filter(Boolean).map(decodeURIComponent);
    const page = PAGES[parts[0]] ? parts[0] : 'overview';
    return { page, arg: parts[1] || null, params: new URLSearchParams(query || '') };
  }
  function hashFor(page, arg, params) {
    const p = new URLSearchParams();
    for (const [k, v] of params) if (v !== '' && v != null) p.set(k, v);
    const q = p.toString();
    return '#/' + page + (arg ? '/' + encodeURIComponent(arg) : '') + (q ? '?' + q : '');
  }
  /** Changes some parameters of the current view (a new hash: shareable, back button works). */
  function setParams(updates, { page, arg } = {}) {
    const cur = parseHash();
    const params = cur.params;
    for (const [k, v] of Object.entries(updates)) {
      if (v == null || v === '') params.delete(k);
      else params.set(k, String(v));
    }
    location.hash = hashFor(page || cur.page, arg !== undefined ? arg : cur.arg, params);
  }
  /** The filter part of the hash, to carry over when moving between pages. */
  function filterParams(params) {
    const p = new URLSearchParams();
    for (const k of FILTER_KEYS) if (params.get(k)) p.set(k, params.get(k));
    return p;
  }
  function linkTo(page, arg) {
    return hashFor(page, arg, filterParams(parseHash().params));
  }

  /** [from_ms, to_ms) of the selected range. */
  function timeWindow(params) {
    const range = params.get('range') || '24h';
    if (range === 'custom') {
      const from = Number(params.get('from'));
      const to = Number(params.get('to'));
      if (isNum(from) && isNum(to) && from > 0 && to > from) return { range, from, to };
    }
    const len = RANGES[range] || RANGES['24h'];
    // Rounded up to the next minute: a view reloaded in the same minute asks the same window.
    const to = Math.ceil((Date.now() + 1) / 60000) * 60000;
    return { range: RANGES[range] ? range : '24h', from: to - len, to };
  }
  /** The common query of the API calls: window and exact-match filters. */
  function commonQuery(params) {
    const w = timeWindow(params);
    const q = { from_ms: w.from, to_ms: w.to };
    for (const k of ['route', 'variant', 'model', 'provider']) if (params.get(k)) q[k] = params.get(k);
    if (isAdmin() && params.get('tenant')) q.tenant = params.get('tenant');
    return q;
  }
  /** The window in seconds, for uPlot's x scale. */
  function winRange(params) {
    const w = timeWindow(params);
    return [w.from / 1000, w.to / 1000];
  }
  const isAdmin = () => state.session && state.session.scope === 'admin';

  // ------------------------------------------------------------------ API

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  function qs(query) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(query || {})) if (v != null && v !== '') p.set(k, String(v));
    const s = p.toString();
    return s ? '?' + s : '';
  }
  async function apiFetch(path, { query, method = 'GET', body } = {}) {
    const headers = { Authorization: 'Bearer ' + state.token };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch('/api/' + path + qs(query), {
      method, headers, body: body !== undefined ? JSON.stringify(body) : undefined, cache: 'no-store',
    });
    if (res.status === 401) {
      showTokenDialog('The token was not accepted (401). Paste another one.');
      throw new ApiError(401, 'not signed in');
    }
    if (!res.ok) {
      let msg = `${res.status} ${res.statusText}`;
      try {
        const j = await res.json();
        if (j && j.error && j.error.message) msg = `${res.status}: ${j.error.message}`;
      } catch (_) { /* not JSON */ }
      throw new ApiError(res.status, msg);
    }
    return res;
  }
  async function api(path, query) {
    const res = await apiFetch(path, { query });
    return res.json();
  }
  async function apiPost(path, body) {
    const res = await apiFetch(path, { method: 'POST', body });
    const text = await res.text();
    try { return JSON.parse(text); } catch (_) { return text; }
  }
  /** CSV through the API (`format=csv&table=NAME`), downloaded as a Blob: a link cannot carry the header. */
  async function downloadCsv(path, query, table) {
    const res = await apiFetch(path, { query: { ...query, format: 'csv', table } });
    const blob = await res.blob();
    const url = URL.createObjectURL(blob);
    const named = /filename="?([^";]+)"?/.exec(res.headers.get('content-disposition') || '');
    const a = el('a', { href: url, download: named ? named[1] : `flywheel-${path.replace(/\//g, '-')}-${table}.csv` });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 5000);
  }

  // -------------------------------------------------------------- session

  async function loadSession() {
    const s = await api('session');
    state.session = s;
    const scope = $('#scope');
    scope.textContent = s.scope === 'admin' ? 'admin' : `tenant ${s.tenant || '?'}`;
    scope.classList.toggle('admin', s.scope === 'admin');
    scope.dataset.scope = s.scope;
    $('#tenant-filter').hidden = s.scope !== 'admin';
    for (const a of $$('#nav a[data-admin]')) a.hidden = s.scope !== 'admin';
    state.filtersKey = '';
  }

  function showTokenDialog(message) {
    const dlg = $('#token-dialog');
    const err = $('#token-error');
    err.hidden = !message;
    err.textContent = message || '';
    if (!dlg.open) dlg.showModal();
    $('#token-input').value = '';
    $('#token-input').focus();
  }

  function setupTokenDialog() {
    const dlg = $('#token-dialog');
    dlg.addEventListener('cancel', (e) => { if (!state.session) e.preventDefault(); });
    $('#token-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const token = $('#token-input').value.trim();
      if (!token) return;
      const old = state.token;
      state.token = token;
      try {
        // Checked without going through apiFetch's 401 handling.
        const res = await fetch('/api/session', { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store' });
        if (res.status === 401 || res.status === 403) throw new Error('This token is not accepted.');
        if (!res.ok) throw new Error(`The server answered ${res.status}.`);
        sessionStorage.setItem(TOKEN_KEY, token);
        dlg.close();
        await loadSession();
        render();
      } catch (err) {
        state.token = old;
        $('#token-error').hidden = false;
        $('#token-error').textContent = err.message;
      }
    });
    $('#token-btn').addEventListener('click', () => showTokenDialog(''));
  }

  // ---------------------------------------------------------------- theme

  function applyTheme() {
    const t = localStorage.getItem(THEME_KEY) || 'system';
    if (t === 'system') delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = t;
    const btn = $('#theme-toggle');
    btn.textContent = t === 'light' ? '☀' : t === 'dark' ? '☾' : '◐';
    btn.title = `Theme: ${t === 'system' ? 'follows the system' : t} (click to change)`;
  }
  function setupTheme() {
    applyTheme();
    $('#theme-toggle').addEventListener('click', () => {
      const order = ['system', 'light', 'dark'];
      const cur = localStorage.getItem(THEME_KEY) || 'system';
      localStorage.setItem(THEME_KEY, order[(order.indexOf(cur) + 1) % order.length]);
      applyTheme();
      redrawCharts();
    });
    const mq = window.matchMedia('(prefers-color-scheme: dark)');
    mq.addEventListener('change', () => { if (!localStorage.getItem(THEME_KEY) || localStorage.getItem(THEME_KEY) === 'system') redrawCharts(); });
  }

  // -------------------------------------------------------------- filters

  function setupFilters() {
    const form = $('#filters');
    form.addEventListener('submit', (e) => e.preventDefault());
    for (const b of $$('.presets button', form)) {
      b.addEventListener('click', () => {
        const r = b.dataset.range;
        if (r === 'custom') {
          const w = timeWindow(parseHash().params);
          form.elements.from.value = toLocalInput(w.from);
          form.elements.to.value = toLocalInput(w.to);
          $('#custom-range').hidden = false;
          return;
        }
        setParams({ range: r === '24h' ? '' : r, from: '', to: '' });
      });
    }
    $('#apply-custom').addEventListener('click', () => {
      const from = new Date(form.elements.from.value).getTime();
      const to = new Date(form.elements.to.value).getTime();
      if (!isNum(from) || !isNum(to) || to <= from) {
        form.elements.to.setCustomValidity('"to" must be after "from"');
        form.elements.to.reportValidity();
        return;
      }
      form.elements.to.setCustomValidity('');
      setParams({ range: 'custom', from, to });
    });
    for (const name of ['route', 'variant', 'model', 'provider', 'tenant']) {
      form.elements[name].addEventListener('change', (e) => setParams({ [name]: e.target.value }));
    }
    $('#refresh').addEventListener('click', () => { state.filtersKey = ''; render(); });
  }
  function toLocalInput(ms) {
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}T${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  }

  /** Shows the hash's filters in the bar and fills the menus from /api/filters. */
  async function syncFilters(params) {
    const form = $('#filters');
    const w = timeWindow(params);
    for (const b of $$('.presets button', form)) b.classList.toggle('active', b.dataset.range === w.range);
    $('#custom-range').hidden = w.range !== 'custom';
    if (w.range === 'custom') {
      form.elements.from.value = toLocalInput(w.from);
      form.elements.to.value = toLocalInput(w.to);
    }
    $('#window-label').textContent = `${fmtTime(w.from, false)} → ${fmtTime(w.to, false)}`;
    $('#window-label').hidden = w.range === 'custom';
    const q = { from_ms: w.from, to_ms: w.to };
    if (isAdmin() && params.get('tenant')) q.tenant = params.get('tenant');
    const key = JSON.stringify([w.range === 'custom' ? q : w.range, q.tenant, state.session && state.session.scope]);
    if (key !== state.filtersKey) {
      state.filtersKey = key;
      try {
        state.filters = await api('filters', q);
      } catch (e) {
        state.filters = null;
        state.filtersKey = '';
        if (e.status === 401) throw e;
      }
    }
    const f = state.filters || {};
    const menus = { route: f.routes, variant: f.variants, model: f.models, provider: f.providers, tenant: f.tenants };
    for (const [name, values] of Object.entries(menus)) {
      const sel = form.elements[name];
      const cur = params.get(name) || '';
      const opts = Array.from(new Set([...(values || []), ...(cur ? [cur] : [])])).sort();
      sel.replaceChildren(el('option', { value: '' }, 'all'), ...opts.map((v) => el('option', { value: v }, v)));
      sel.value = cur;
      sel.classList.toggle('set', !!cur);
    }
  }

  function updateNav(page) {
    const fp = filterParams(parseHash().params);
    for (const a of $$('#nav a')) {
      a.classList.toggle('active', a.dataset.page === page);
      a.href = hashFor(a.dataset.page, null, fp);
    }
  }

  // --------------------------------------------------------- components

  function card(title, opts, ...body) {
    const { hint, actions, cls } = opts || {};
    return el('section', { class: 'card ' + (cls || '') },
      title || actions ? el('div', { class: 'card-head' },
        title ? el('h2', null, title) : null,
        hint ? el('span', { class: 'hint' }, hint) : null,
        actions ? el('div', { class: 'actions' }, actions) : null) : null,
      body);
  }
  function notice(text, error = false) {
    return el('div', { class: 'notice' + (error ? ' error' : '') }, text);
  }
  function csvLink(path, query, table) {
    return el('a', {
      class: 'csv', href: '#', role: 'button', title: `Download "${table}" as CSV`, dataset: { csv: table },
      onclick: (e) => {
        e.preventDefault();
        downloadCsv(path, query, table).catch((err) => alert('CSV download failed: ' + err.message));
      },
    }, 'CSV');
  }

  /** A stat card: big number, and its change against the previous period.
   *  better: 'up' (higher is good), 'down' (lower is good) or null. */
  function statCard({ key, label, cur, prev, fmt, better, foot, prevLabel }) {
    let trend;
    if (!isNum(cur) || !isNum(prev)) {
      trend = el('div', { class: 'trend neutral' }, `${DASH} vs ${prevLabel}`);
    } else if (prev === 0) {
      trend = el('div', { class: 'trend neutral' }, cur === 0 ? `= vs ${prevLabel}` : `▲ new: ${fmt(0)} in the ${prevLabel}`);
    } else {
      const d = (cur - prev) / Math.abs(prev);
      const arrow = d > 0 ? '▲' : d < 0 ? '▼' : '=';
      let cls = 'neutral';
      if (better && d !== 0) cls = (d > 0) === (better === 'up') ? 'good' : 'bad';
      const pct = Math.abs(d) >= 10 ? `${(Math.abs(d)).toFixed(0)}×` : `${(Math.abs(d) * 100).toFixed(Math.abs(d) < 0.1 ? 1 : 0)}%`;
      trend = el('div', { class: 'trend ' + cls, title: `previous: ${fmt(prev)}` }, `${arrow} ${pct} vs ${prevLabel} (${fmt(prev)})`);
    }
    return el('div', { class: 'card stat', dataset: { stat: key, value: isNum(cur) ? String(cur) : '' } },
      el('div', { class: 'label' }, label),
      el('div', { class: 'value' }, fmt(cur)),
      trend,
      foot ? el('div', { class: 'foot' }, foot) : null);
  }

  /** A sortable table in a card with a CSV link.
   *  columns: [{key, label, fmt, num, value(row), node(row)}] */
  function tableCard({ title, hint, name, rows, columns, csv, sort, empty, rowKey }) {
    rows = rows || [];
    columns = columns || autoColumns(rows);
    for (const c of columns) {
      if (c.num === undefined) c.num = isNumericColumn(rows, c.key);
      if (!c.fmt) c.fmt = fmtFor(c.key);
      if (!c.label) c.label = labelFor(c.key);
    }
    let sortKey = sort ? sort.key : null;
    let sortDir = sort ? sort.dir : 1;
    const table = el('table', { class: 'data', dataset: { table: name } });
    const thead = el('thead');
    const tbody = el('tbody');
    table.append(thead, tbody);
    const value = (c, r) => (c.value ? c.value(r) : r[c.key]);
    function draw() {
      const head = el('tr');
      for (const c of columns) {
        const th = el('th', { class: c.num ? 'num' : '', title: c.title || `sort by ${c.label}`, dataset: { col: c.key } }, c.label);
        if (c.key === sortKey) th.appendChild(el('span', { class: 'arrow' }, sortDir > 0 ? '▲' : '▼'));
        th.addEventListener('click', () => {
          if (sortKey === c.key) sortDir = -sortDir;
          else { sortKey = c.key; sortDir = c.num ? -1 : 1; }
          draw();
        });
        head.appendChild(th);
      }
      thead.replaceChildren(head);
      let sorted = rows;
      if (sortKey) {
        const c = columns.find((x) => x.key === sortKey);
        sorted = rows.slice().sort((a, b) => {
          const va = value(c, a);
          const vb = value(c, b);
          if (va == null && vb == null) return 0;
          if (va == null) return 1; // nulls last either way
          if (vb == null) return -1;
          if (typeof va === 'number' && typeof vb === 'number') return (va - vb) * sortDir;
          return String(va).localeCompare(String(vb), undefined, { numeric: true }) * sortDir;
        });
      }
      const trs = sorted.map((r) => {
        const tr = el('tr', rowKey ? { dataset: { key: rowKey(r) } } : null);
        for (const c of columns) {
          const v = value(c, r);
          const td = el('td', { class: (c.num ? 'num' : '') + (v == null ? ' null' : '') + (c.wrap ? ' wrap' : ''), dataset: { col: c.key } });
          if (v != null && typeof v !== 'object') td.dataset.value = String(v);
          if (c.node) appendAll(td, [c.node(r)]);
          else td.textContent = c.fmt(v);
          tr.appendChild(td);
        }
        return tr;
      });
      if (!trs.length) trs.push(el('tr', null, el('td', { class: 'empty-row', colspan: columns.length || 1 }, empty || 'No rows in this window.')));
      tbody.replaceChildren(...trs);
    }
    draw();
    return card(title, {
      hint,
      actions: [el('span', { class: 'muted small' }, `${rows.length} row${rows.length === 1 ? '' : 's'}`), csv ? csvLink(csv.path, csv.query, name) : null],
    }, el('div', { class: 'table-wrap' + (rows.length > 15 ? ' scroll' : '') }, table));
  }
  function autoColumns(rows) {
    const keys = [];
    for (const r of rows) for (const k of Object.keys(r)) if (!keys.includes(k)) keys.push(k);
    return keys.map((key) => ({ key }));
  }

  function badge(text, kind) { return el('span', { class: 'badge ' + (kind || '') }, text); }
  function statusKind(s) {
    s = String(s || '').toLowerCase();
    if (/promot|success|succeed|done|complete|pass|closed|ok/.test(s)) return 'good';
    if (/roll|fail|reject|error|abort|open|critical|cancel/.test(s) && !/half/.test(s)) return 'bad';
    if (/pause|half|wait|pending|no_data|warn|allowed/.test(s)) return 'warn';
    if (/run|ramp|shadow|active|train|eval/.test(s)) return 'info';
    return '';
  }

  // ------------------------------------------------------------- charts

  const PALETTE = ['#3b7cf0', '#f08c2e', '#1fad7a', '#b455d1', '#e2b21b', '#1aa3b8', '#e5508a', '#7cb82f', '#7a5cf0', '#8a94a6'];
  const colorMap = new Map();
  function colorFor(name) {
    if (!colorMap.has(name)) colorMap.set(name, PALETTE[colorMap.size % PALETTE.length]);
    return colorMap.get(name);
  }
  function alpha(hex, a) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
  }

  /** Registers a chart so it is resized with the window and dropped with the page. */
  function registerChart(c) { state.charts.push(c); return c; }
  function destroyCharts() {
    for (const c of state.charts) { try { c.destroy(); } catch (_) { /* gone */ } }
    state.charts = [];
  }
  function redrawCharts() { for (const c of state.charts) c.redraw(); }
  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { for (const c of state.charts) c.resize(); }, 120);
  });

  /** Aligns rows {t_ms, ...} into uPlot's columns: xs (s) and, per group, the rows at each x. */
  function alignBy(rows, groupFn, xKey = 't_ms', scale = 1000) {
    const xsSet = new Set(rows.map((r) => r[xKey]).filter(isNum));
    const xsMs = Array.from(xsSet).sort((a, b) => a - b);
    const idx = new Map(xsMs.map((x, i) => [x, i]));
    const groups = new Map();
    for (const r of rows) {
      const g = groupFn(r);
      if (!groups.has(g)) groups.set(g, new Array(xsMs.length).fill(null));
      const i = idx.get(r[xKey]);
      if (i !== undefined) groups.get(g)[i] = r;
    }
    return { xs: xsMs.map((x) => x / scale), groups };
  }
  const col = (aligned, key) => aligned.map((r) => (r && isNum(r[key]) ? r[key] : null));

  /** Room for an axis' widest label (uPlot calls it with the formatted values). */
  function axisSize(u, values) {
    const longest = (values || []).reduce((m, v) => Math.max(m, String(v == null ? '' : v).length), 0);
    return Math.max(40, Math.ceil(longest * 6.6) + 20);
  }

  /** A uPlot chart in `host`. series: [{label, data, color, dash, width, scale, fmt, fill, paths, points}]. */
  function lineChart(host, { xs, series, height = 240, time = true, yFmt = fmtNum, y2Fmt, yLabel, y2Label, bands, xFmt, yRange, xRange }) {
    if (!xs.length || !series.some((s) => !s.ref && s.data.some((v) => v != null))) {
      host.appendChild(el('div', { class: 'chart-empty' }, 'No data in this window.'));
      return null;
    }
    const box = el('div', { class: 'chart' });
    host.appendChild(box);
    let plot = null;
    const make = () => {
      const axis = cssVar('--chart-axis');
      const grid = cssVar('--chart-grid');
      const font = '11px system-ui, sans-serif';
      const axes = [
        {
          stroke: axis, font, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 },
          ...(xFmt ? { values: (u, vals) => vals.map((v) => xFmt(v)) } : {}),
        },
        {
          scale: 'y', stroke: axis, font, size: axisSize, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 },
          values: (u, vals) => vals.map((v) => yFmt(v)), label: yLabel, labelFont: font, labelSize: yLabel ? 18 : 0,
        },
      ];
      // Time series span the whole selected window, so charts line up with it.
      const scales = { x: xRange ? { time, range: () => xRange } : { time } };
      if (yRange) scales.y = { range: yRange };
      if (series.some((s) => s.scale === 'y2')) {
        axes.push({
          scale: 'y2', side: 1, stroke: axis, font, size: axisSize, grid: { show: false }, ticks: { stroke: grid, width: 1 },
          values: (u, vals) => vals.map((v) => (y2Fmt || yFmt)(v)), label: y2Label, labelFont: font, labelSize: y2Label ? 18 : 0,
        });
      }
      const opts = {
        width: Math.max(200, box.clientWidth),
        height,
        scales,
        axes,
        legend: { live: true },
        cursor: { drag: { x: true, y: false }, points: { size: 6 } },
        series: [
          { label: time ? 'time' : 'x', value: time ? (u, v) => (v == null ? DASH : fmtTime(v * 1000)) : (u, v) => (v == null ? DASH : (xFmt || fmtNum)(v)) },
          ...series.map((s) => ({
            label: s.label,
            stroke: s.color,
            width: s.width || 1.6,
            dash: s.dash,
            fill: s.fill,
            scale: s.scale || 'y',
            paths: s.paths,
            spanGaps: !!s.spanGaps,
            // Few points (a short window) are drawn big enough to see.
            points: s.points || { show: true, size: xs.length <= 3 ? 9 : xs.length <= 20 ? 6 : 3.5, fill: s.color },
            value: (u, v) => (v == null ? DASH : (s.fmt || (s.scale === 'y2' ? y2Fmt || yFmt : yFmt))(v)),
            show: s.show !== false,
          })),
        ],
        bands,
      };
      plot = new uPlot(opts, [xs, ...series.map((s) => s.data)], box);
    };
    make();
    return registerChart({
      resize: () => plot && plot.setSize({ width: Math.max(200, box.clientWidth), height }),
      redraw: () => { if (plot) plot.destroy(); make(); },
      destroy: () => plot && plot.destroy(),
    });
  }

  /** A canvas sized to its box and the screen's pixel ratio; draw(ctx, w, h) paints it. */
  function canvasChart(host, height, draw, { onMove } = {}) {
    const box = el('div', { class: 'chart' });
    const canvas = el('canvas');
    const tip = el('div', { class: 'chart-tip', hidden: true });
    box.append(canvas, tip);
    host.appendChild(box);
    let hit = [];
    const paint = () => {
      const w = Math.max(200, box.clientWidth);
      const dpr = window.devicePixelRatio || 1;
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(height * dpr);
      canvas.style.width = w + 'px';
      canvas.style.height = height + 'px';
      const ctx = canvas.getContext('2d');
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, w, height);
      hit = draw(ctx, w, height) || [];
    };
    paint();
    if (onMove) {
      canvas.addEventListener('mousemove', (e) => {
        const r = canvas.getBoundingClientRect();
        const x = e.clientX - r.left;
        const y = e.clientY - r.top;
        let best = null;
        let bd = 14 * 14;
        for (const p of hit) {
          const d = (p.x - x) ** 2 + (p.y - y) ** 2;
          if (d < bd) { bd = d; best = p; }
        }
        if (best) {
          tip.replaceChildren(...onMove(best.item).map((line, i) => el(i ? 'div' : 'b', null, line)));
          tip.hidden = false;
          tip.style.left = Math.min(best.x + 12, box.clientWidth - 240) + 'px';
          tip.style.top = Math.max(0, best.y - 10) + 'px';
        } else tip.hidden = true;
      });
      canvas.addEventListener('mouseleave', () => { tip.hidden = true; });
    }
    return registerChart({ resize: paint, redraw: paint, destroy: () => {} });
  }

  function niceStep(span, n) {
    const raw = span / Math.max(1, n);
    const mag = 10 ** Math.floor(Math.log10(raw));
    const f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  }
  function niceTicks(lo, hi, n = 5) {
    if (!(hi > lo)) { const d = Math.abs(lo) || 1; lo -= d * 0.5; hi += d * 0.5; }
    const step = niceStep(hi - lo, n);
    const start = Math.floor(lo / step) * step;
    const end = Math.ceil(hi / step) * step;
    const ticks = [];
    for (let v = start; v <= end + step * 1e-9; v += step) ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return { lo: start, hi: end, ticks };
  }
  function drawAxes(ctx, { x0, x1, y0, y1, xt, yt, xFmt, yFmt, xLabel, yLabel }) {
    const axis = cssVar('--chart-axis');
    const grid = cssVar('--chart-grid');
    ctx.font = '11px system-ui, sans-serif';
    ctx.lineWidth = 1;
    ctx.fillStyle = axis;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (const t of yt.ticks) {
      const y = y1 - ((t - yt.lo) / (yt.hi - yt.lo)) * (y1 - y0);
      ctx.strokeStyle = grid;
      ctx.beginPath(); ctx.moveTo(x0, Math.round(y) + 0.5); ctx.lineTo(x1, Math.round(y) + 0.5); ctx.stroke();
      ctx.fillText(yFmt(t), x0 - 6, y);
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (const t of xt.ticks) {
      const x = x0 + ((t - xt.lo) / (xt.hi - xt.lo)) * (x1 - x0);
      ctx.strokeStyle = grid;
      ctx.beginPath(); ctx.moveTo(Math.round(x) + 0.5, y0); ctx.lineTo(Math.round(x) + 0.5, y1); ctx.stroke();
      ctx.fillText(xFmt(t), x, y1 + 6);
    }
    if (xLabel) { ctx.fillText(xLabel, (x0 + x1) / 2, y1 + 22); }
    if (yLabel) {
      ctx.save();
      ctx.translate(12, (y0 + y1) / 2);
      ctx.rotate(-Math.PI / 2);
      ctx.textBaseline = 'middle';
      ctx.fillText(yLabel, 0, 0);
      ctx.restore();
    }
  }

  /** The cost/quality frontier: one point per model version, x = cost per request,
   *  y = quality with its 95 % interval as a whisker; the efficient ones joined. */
  function frontierChart(host, points, { yLabel, yFmt }) {
    if (!points.length) {
      host.appendChild(el('div', { class: 'chart-empty' }, 'No graded model versions in this window.'));
      return;
    }
    const efficient = paretoFront(points);
    canvasChart(host, 340, (ctx, w, h) => {
      const text = cssVar('--text');
      const accent = cssVar('--accent');
      const xs = points.map((p) => p.x);
      const ys = points.flatMap((p) => [p.y, p.lo, p.hi]).filter(isNum);
      const xMax = Math.max(...xs);
      const xt = niceTicks(0, xMax > 0 ? xMax * 1.15 : 1, 5);
      let yLo = Math.min(...ys);
      let yHi = Math.max(...ys);
      const padY = (yHi - yLo) * 0.08 || Math.abs(yHi) * 0.1 || 0.1;
      const yt = niceTicks(yLo - padY, yHi + padY, 5);
      const x0 = 74; const x1 = w - 40; const y0 = 12; const y1 = h - 44;
      drawAxes(ctx, { x0, x1, y0, y1, xt, yt, xFmt: fmtUSD, yFmt, xLabel: 'cost per request', yLabel });
      const px = (v) => x0 + ((v - xt.lo) / (xt.hi - xt.lo)) * (x1 - x0);
      const py = (v) => y1 - ((v - yt.lo) / (yt.hi - yt.lo)) * (y1 - y0);
      // The efficient frontier: a step line through the points no other beats on both axes.
      if (efficient.length > 1) {
        ctx.strokeStyle = alpha(accent.startsWith('#') ? accent : '#3b7cf0', 0.55);
        ctx.setLineDash([5, 4]);
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        efficient.forEach((p, i) => {
          if (i === 0) ctx.moveTo(px(p.x), py(p.y));
          else { ctx.lineTo(px(p.x), py(efficient[i - 1].y)); ctx.lineTo(px(p.x), py(p.y)); }
        });
        ctx.stroke();
        ctx.setLineDash([]);
      }
      const hit = [];
      ctx.font = '12px system-ui, sans-serif';
      ctx.textBaseline = 'middle';
      // Labels nudged down so that close points do not write over each other.
      const placed = [];
      const labelY = new Map();
      for (const p of points.slice().sort((a, b) => b.y - a.y)) {
        const x = px(p.x);
        let ly = py(p.y);
        while (placed.some((q) => Math.abs(q.y - ly) < 14 && Math.abs(q.x - x) < 180)) ly += 14;
        placed.push({ x, y: ly });
        labelY.set(p, ly);
      }
      for (const p of points) {
        const x = px(p.x);
        const y = py(p.y);
        ctx.strokeStyle = p.color;
        ctx.lineWidth = 1.5;
        if (isNum(p.lo) && isNum(p.hi)) {
          ctx.beginPath();
          ctx.moveTo(x, py(p.lo)); ctx.lineTo(x, py(p.hi));
          ctx.moveTo(x - 5, py(p.lo)); ctx.lineTo(x + 5, py(p.lo));
          ctx.moveTo(x - 5, py(p.hi)); ctx.lineTo(x + 5, py(p.hi));
          ctx.stroke();
        }
        ctx.beginPath();
        ctx.arc(x, y, efficient.includes(p) ? 6 : 4.5, 0, Math.PI * 2);
        ctx.fillStyle = p.color;
        ctx.fill();
        if (efficient.includes(p)) { ctx.strokeStyle = text; ctx.lineWidth = 1.2; ctx.stroke(); }
        ctx.fillStyle = text;
        const right = x < x1 - 160;
        ctx.textAlign = right ? 'left' : 'right';
        ctx.fillText(p.label, x + (right ? 10 : -10), labelY.get(p));
        hit.push({ x, y, item: p });
      }
      return hit;
    }, { onMove: (p) => p.tip });
    host.appendChild(el('div', { class: 'legend-note' },
      'Each point is a model version on a route (route · variant · model); the whisker is the 95 % interval of the mean. ',
      'Outlined points are on the frontier: no other is both cheaper and better.'));
  }
  function paretoFront(points) {
    const sorted = points.filter((p) => isNum(p.x) && isNum(p.y)).sort((a, b) => a.x - b.x || b.y - a.y);
    const front = [];
    let best = -Infinity;
    for (const p of sorted) if (p.y > best) { front.push(p); best = p.y; }
    return front;
  }

  /** A histogram: bins [{lo, hi, count}] as bars. */
  function histogramChart(host, bins, color, xFmt = fmtNum) {
    if (!bins.length || !bins.some((b) => b.count > 0)) {
      host.appendChild(el('div', { class: 'chart-empty' }, 'No values in this window.'));
      return;
    }
    bins = bins.slice().sort((a, b) => a.lo - b.lo);
    const span = Math.max(...bins.map((b) => b.hi)) - Math.min(...bins.map((b) => b.lo));
    if (!(span > 0)) {
      // Every value is the same: one bar around it.
      const v = bins[0].lo;
      bins = [{ lo: v - 0.5, hi: v + 0.5, count: bins.reduce((s, b) => s + (b.count || 0), 0), only: v }];
    }
    canvasChart(host, 200, (ctx, w, h) => {
      const lo = Math.min(...bins.map((b) => b.lo));
      const hi = Math.max(...bins.map((b) => b.hi));
      const xt = { lo, hi: hi > lo ? hi : lo + 1, ticks: [] };
      const n = Math.min(bins.length, Math.max(2, Math.floor((w - 80) / 60)));
      const every = Math.ceil(bins.length / n);
      bins.forEach((b, i) => { if (i % every === 0) xt.ticks.push(b.lo); });
      xt.ticks.push(bins[bins.length - 1].hi);
      const yt = niceTicks(0, Math.max(...bins.map((b) => b.count)), 4);
      const x0 = 56; const x1 = w - 14; const y0 = 10; const y1 = h - 26;
      drawAxes(ctx, { x0, x1, y0, y1, xt, yt, xFmt, yFmt: fmtCount });
      const px = (v) => x0 + ((v - xt.lo) / (xt.hi - xt.lo)) * (x1 - x0);
      const py = (v) => y1 - ((v - yt.lo) / (yt.hi - yt.lo)) * (y1 - y0);
      const hit = [];
      for (const b of bins) {
        const xa = px(b.lo) + 1;
        const xb = px(b.hi) - 1;
        ctx.fillStyle = alpha(color, 0.75);
        ctx.fillRect(xa, py(b.count), Math.max(1, xb - xa), y1 - py(b.count));
        hit.push({ x: (xa + xb) / 2, y: py(b.count), item: b });
      }
      return hit;
    }, { onMove: (b) => [b.only !== undefined ? `= ${xFmt(b.only)}` : `${xFmt(b.lo)} – ${xFmt(b.hi)}`, `${fmtCount(b.count)} values`] });
  }

  // ---------------------------------------------------------- rendering

  async function render() {
    const gen = ++state.gen;
    const { page, arg, params } = parseHash();
    updateNav(page);
    destroyCharts();
    const view = $('#view');
    delete view.dataset.rendered;
    if (!state.session) return;
    const ctx = { gen, page, arg, params, alive: () => gen === state.gen };
    view.replaceChildren(el('div', { class: 'loading' }, 'Loading…'));
    try {
      await syncFilters(params);
      if (!ctx.alive()) return;
      const def = PAGES[page];
      document.title = `${def.title} · Flywheel`;
      if (def.admin && !isAdmin()) {
        view.replaceChildren(notice(`${def.title} is for the admin token only.`));
        return;
      }
      await def.render(ctx, view);
      if (ctx.alive()) view.dataset.rendered = page + (arg ? '/' + arg : '');
    } catch (e) {
      if (!ctx.alive()) return;
      destroyCharts();
      if (e.status === 401) {
        view.replaceChildren(notice('Sign in with a token to see the dashboards.'));
      } else {
        view.replaceChildren(notice(`Could not load this page: ${e.message}`, true));
      }
      view.dataset.rendered = 'error';
    }
  }

  /** Replaces the view once data is in; returns the new container. */
  function fresh(ctx, view) {
    if (!ctx.alive()) throw Object.assign(new Error('stale'), { stale: true });
    destroyCharts();
    view.replaceChildren();
    delete view.dataset.rendered;
    return view;
  }
  function pageHead(title, sub, ...controls) {
    return el('div', { class: 'page-head' }, el('h1', null, title), sub ? el('span', { class: 'sub' }, sub) : null,
      controls.length ? el('div', { class: 'controls' }, controls) : null);
  }
  function windowText(params) {
    const w = timeWindow(params);
    return w.range === 'custom' ? `${fmtTime(w.from, false)} → ${fmtTime(w.to, false)}` : `last ${w.range.replace('h', ' h').replace('d', ' d')}`;
  }
  function prevText(params) {
    const w = timeWindow(params);
    return w.range === 'custom' ? `previous ${fmtDuration(w.to - w.from)}` : `previous ${w.range.replace('h', ' h').replace('d', ' d')}`;
  }

  // ----------------------------------------------------------- Overview

  async function pageOverview(ctx, view) {
    const { params } = ctx;
    const query = commonQuery(params);
    if (params.get('metric')) query.metric = params.get('metric');
    if (params.get('threshold')) query.threshold = params.get('threshold');
    const d = await api('overview', query);
    fresh(ctx, view);
    const metrics = Array.from(new Set([...((state.filters && state.filters.metrics) || []), ...(d.metric ? [d.metric] : [])]));
    const metricSel = el('select', { name: 'metric', onchange: (e) => setParams({ metric: e.target.value }) },
      el('option', { value: '' }, 'default (first grader)'), metrics.map((m) => el('option', { value: m }, m)));
    metricSel.value = params.get('metric') || '';
    const thr = el('input', {
      type: 'number', name: 'threshold', step: '0.05', value: String(d.threshold ?? 0.5), class: 'narrow',
      onchange: (e) => setParams({ threshold: e.target.value }),
    });
    view.appendChild(pageHead('Overview', windowText(params),
      el('label', { title: 'A successful answer: status < 400, output valid, and this metric ≥ threshold where graded' }, 'Success metric', metricSel),
      el('label', null, '≥', thr)));

    const cur = d.totals.current;
    const prev = d.totals.previous;
    const pl = prevText(params);
    const tok = (t) => (t && isNum(t.prompt_tokens) ? t.prompt_tokens + (t.completion_tokens || 0) : null);
    view.appendChild(el('div', { class: 'grid cards' },
      statCard({ key: 'requests', label: 'Requests', cur: cur.requests, prev: prev.requests, fmt: fmtCount, prevLabel: pl }),
      statCard({
        key: 'tokens', label: 'Tokens', cur: tok(cur), prev: tok(prev), fmt: fmtCount, prevLabel: pl,
        foot: `${fmtCount(cur.prompt_tokens)} prompt · ${fmtCount(cur.completion_tokens)} completion`,
      }),
      statCard({ key: 'cost_usd', label: 'Cost', cur: cur.cost_usd, prev: prev.cost_usd, fmt: fmtUSD, better: 'down', prevLabel: pl, foot: `${fmtUSD(cur.cost_per_request)} per request` }),
      statCard({
        key: 'cost_per_success', label: 'Cost per successful answer', cur: cur.cost_per_success, prev: prev.cost_per_success,
        fmt: fmtUSD, better: 'down', prevLabel: pl,
        foot: `success ${fmtPct(cur.success_rate)}` + (d.metric ? ` of ${fmtCount(cur.graded)} graded (${d.metric} ≥ ${d.threshold})` : ''),
      }),
      statCard({ key: 'error_rate', label: 'Error rate', cur: cur.error_rate, prev: prev.error_rate, fmt: fmtPct, better: 'down', prevLabel: pl, foot: `${fmtCount(cur.errors)} errors` }),
      statCard({ key: 'success_rate', label: 'Success rate', cur: cur.success_rate, prev: prev.success_rate, fmt: fmtPct, better: 'up', prevLabel: pl, foot: `${fmtCount(cur.successes)} successful answers` }),
    ));

    const series = d.series || [];
    const a = alignBy(series, () => 'all');
    const rows = a.groups.get('all') || [];
    const tsCard = card('Traffic and cost', { hint: `per ${fmtDuration(d.window && d.window.step_ms)}`, actions: csvLink('overview', query, 'series') });
    view.appendChild(tsCard);
    lineChart(tsCard, {
      xs: a.xs, xRange: winRange(params),
      yFmt: fmtCount,
      y2Fmt: fmtUSD,
      series: [
        { label: 'requests', data: col(rows, 'requests'), color: PALETTE[0], fill: alpha(PALETTE[0], 0.08) },
        { label: 'errors', data: col(rows, 'errors'), color: '#e5484d' },
        { label: 'cost', data: col(rows, 'cost_usd'), color: PALETTE[2], scale: 'y2', dash: [6, 3] },
      ],
    });

    const frontier = d.frontier || [];
    const graded = frontier.some((f) => isNum(f.quality_mean));
    const routes = new Set(frontier.map((f) => f.route));
    const points = frontier
      .filter((f) => isNum(f.cost_per_request) && (graded ? isNum(f.quality_mean) : isNum(f.success_rate)))
      .map((f) => {
        const name = (routes.size > 1 ? f.route + ' · ' : '') + f.variant + ' · ' + f.model;
        return {
          x: f.cost_per_request,
          y: graded ? f.quality_mean : f.success_rate,
          lo: graded ? f.quality_low : null,
          hi: graded ? f.quality_high : null,
          label: name,
          color: colorFor('variant:' + f.variant),
          tip: [name, `cost/request ${fmtUSD(f.cost_per_request)}`,
            graded ? `${d.metric} ${fmtNum(f.quality_mean)} [${fmtNum(f.quality_low)}, ${fmtNum(f.quality_high)}] (n=${fmtCount(f.quality_n)})` : `success ${fmtPct(f.success_rate)}`,
            `cost per success ${fmtUSD(f.cost_per_success)}`, `${fmtCount(f.requests)} requests`],
        };
      });
    const yLabel = graded ? `${d.metric} (mean, 95 % interval)` : 'success rate';
    const fc = card('Cost / quality frontier', { hint: graded ? `quality = ${d.metric}` : 'no graded metric in this window: y = success rate' });
    view.appendChild(fc);
    frontierChart(fc, points, { yLabel, yFmt: graded ? fmtNum : fmtPct });

    view.appendChild(tableCard({
      title: 'Model versions', name: 'frontier', rows: frontier, csv: { path: 'overview', query },
      hint: 'per route, variant and model',
      rowKey: (r) => `${r.route}|${r.variant}|${r.model}`,
      sort: { key: 'requests', dir: -1 },
      columns: [
        { key: 'route' }, { key: 'variant' }, { key: 'model' },
        { key: 'requests' }, { key: 'cost_usd', label: 'cost' }, { key: 'cost_per_request', label: 'cost / request' },
        { key: 'quality_n', label: 'graded' }, { key: 'quality_mean', label: 'quality', fmt: fmtNum },
        { key: 'quality_low', label: 'low', fmt: fmtNum }, { key: 'quality_high', label: 'high', fmt: fmtNum },
        { key: 'success_rate', label: 'success' }, { key: 'cost_per_success', label: 'cost / success' },
      ],
    }));
  }

  // ------------------------------------------------------------ Latency

  async function pageLatency(ctx, view) {
    const { params } = ctx;
    const query = commonQuery(params);
    const d = await api('latency', query);
    fresh(ctx, view);
    const q = params.get('q') || 'all';
    const chips = el('span', { class: 'chips' }, ['all', 'p50', 'p90', 'p95', 'p99'].map((p) =>
      el('button', { type: 'button', class: 'chip' + (p === q ? ' active' : ''), onclick: () => setParams({ q: p === 'all' ? '' : p }) }, p)));
    view.appendChild(pageHead('Latency', windowText(params), el('label', null, 'Percentile', chips)));

    const a = alignBy(d.series || [], (r) => `${r.model || '(no model)'} · ${r.provider || '(no provider)'}`);
    const dashes = { p50: undefined, p90: [8, 3], p95: [4, 3], p99: [1.5, 3] };
    const pct = q === 'all' ? ['p50', 'p90', 'p95', 'p99'] : [q];
    const latSeries = [];
    for (const [g, rows] of a.groups) {
      for (const p of pct) latSeries.push({ label: `${g} ${p}`, data: col(rows, p), color: colorFor(g), dash: dashes[p] });
    }
    const c1 = card('Request latency', { hint: `${pct.join(' / ')} per model · provider; solid p50, dashed higher`, actions: csvLink('latency', query, 'series') });
    view.appendChild(c1);
    lineChart(c1, { xs: a.xs, xRange: winRange(params), series: latSeries, yFmt: fmtMs, height: 280 });

    const grid = el('div', { class: 'grid two' });
    view.appendChild(grid);
    const c2 = card('Time to first token', { hint: 'p50 solid, p95 dashed (streams)' });
    const c3 = card('Gateway overhead', { hint: 'latency minus upstream attempts; p50 solid, p99 dashed' });
    grid.append(c2, c3);
    const ttft = [];
    const over = [];
    for (const [g, rows] of a.groups) {
      ttft.push({ label: `${g} p50`, data: col(rows, 'ttft_p50'), color: colorFor(g) });
      ttft.push({ label: `${g} p95`, data: col(rows, 'ttft_p95'), color: colorFor(g), dash: [5, 3] });
      over.push({ label: `${g} p50`, data: col(rows, 'overhead_p50'), color: colorFor(g) });
      over.push({ label: `${g} p99`, data: col(rows, 'overhead_p99'), color: colorFor(g), dash: [5, 3] });
    }
    lineChart(c2, { xs: a.xs, xRange: winRange(params), series: ttft, yFmt: fmtMs, height: 220 });
    lineChart(c3, { xs: a.xs, xRange: winRange(params), series: over, yFmt: fmtMs, height: 220 });

    view.appendChild(tableCard({
      title: 'Latency by model and provider', name: 'table', rows: d.table || [], csv: { path: 'latency', query },
      sort: { key: 'requests', dir: -1 }, rowKey: (r) => `${r.model}|${r.provider}`,
      columns: ['model', 'provider', 'requests', 'p50', 'p90', 'p95', 'p99', 'ttft_p50', 'ttft_p90', 'ttft_p95', 'ttft_p99', 'overhead_p50', 'overhead_p99']
        .map((key) => ({ key, label: key.replace('_', ' ') })),
    }));
  }

  // -------------------------------------------------------- Reliability

  async function pageReliability(ctx, view) {
    const { params } = ctx;
    const query = commonQuery(params);
    const d = await api('reliability', query);
    fresh(ctx, view);
    view.appendChild(pageHead('Reliability', windowText(params)));
    const series = d.series || [];
    const sum = (k) => series.reduce((s, r) => s + (isNum(r[k]) ? r[k] : 0), 0);
    const requests = sum('requests');
    const kinds = [
      ['retries', 'Retries', '#e2b21b'], ['fallbacks', 'Fallbacks', '#f08c2e'], ['failovers', 'Failovers', '#b455d1'],
      ['validation_failures', 'Validation failures', '#1aa3b8'], ['errors_4xx', '4xx', '#e5508a'], ['errors_5xx', '5xx', '#e5484d'],
    ];
    view.appendChild(el('div', { class: 'grid cards' },
      el('div', { class: 'card stat', dataset: { stat: 'requests', value: String(requests) } },
        el('div', { class: 'label' }, 'Requests'), el('div', { class: 'value' }, fmtCount(requests)), el('div', { class: 'foot' }, windowText(params))),
      kinds.map(([k, label]) => {
        const n = sum(k);
        return el('div', { class: 'card stat', dataset: { stat: k, value: String(n) } },
          el('div', { class: 'label' }, label), el('div', { class: 'value' }, fmtCount(n)),
          el('div', { class: 'foot' }, requests ? `${fmtPct(n / requests)} of requests` : DASH));
      })));

    const a = alignBy(series, () => 'all');
    const rows = a.groups.get('all') || [];
    const c = card('Over time', { hint: 'counts per bucket; requests on the right axis', actions: csvLink('reliability', query, 'series') });
    view.appendChild(c);
    lineChart(c, {
      xs: a.xs, xRange: winRange(params), yFmt: fmtCount, y2Fmt: fmtCount, height: 280,
      series: [
        ...kinds.map(([k, label, color]) => ({ label, data: col(rows, k), color })),
        { label: 'requests', data: col(rows, 'requests'), color: cssVar('--chart-axis') || '#8a94a6', scale: 'y2', dash: [2, 3], width: 1 },
      ],
    });

    const grid = el('div', { class: 'grid two' });
    view.appendChild(grid);
    grid.appendChild(tableCard({
      title: 'Failed attempts', name: 'errors', rows: d.errors || [], csv: { path: 'reliability', query },
      hint: 'most frequent first', sort: { key: 'requests', dir: -1 },
      columns: [
        { key: 'outcome', node: (r) => badge(r.outcome ?? DASH, statusKind(r.outcome)) }, { key: 'status', num: true, fmt: fmtValue },
        { key: 'reason', wrap: true }, { key: 'attempts' }, { key: 'requests' },
      ],
    }));
    const circuits = d.circuits || [];
    grid.appendChild(circuits.length ? tableCard({
      title: 'Circuit breakers', name: 'circuits', rows: circuits, csv: { path: 'reliability', query },
      hint: 'live, from the gateway',
      columns: [{ key: 'provider' }, { key: 'state', node: (r) => badge(r.state ?? DASH, r.state === 'closed' ? 'good' : r.state === 'open' ? 'bad' : 'warn') }],
    }) : card('Circuit breakers', { hint: 'live, from the gateway' },
      el('p', { class: 'muted' }, d.circuits_error ? `No circuit states: ${d.circuits_error}`
        : 'No circuit states: the server reads them from the gateway\'s /metrics when started with --gateway-url.')));
  }

  // ------------------------------------------------------------ Quality

  async function pageQuality(ctx, view) {
    const { params } = ctx;
    const query = commonQuery(params);
    const d = await api('quality', query);
    fresh(ctx, view);
    const all = Array.from(new Set([...(d.metrics || []), ...(d.series || []), ...(d.histograms || [])].map((r) => r.metric))).sort();
    const chosen = params.get('metric') || '';
    const sel = el('select', { name: 'metric', onchange: (e) => setParams({ metric: e.target.value }) },
      el('option', { value: '' }, 'all metrics'), all.map((m) => el('option', { value: m }, m)));
    sel.value = all.includes(chosen) ? chosen : '';
    view.appendChild(pageHead('Quality', windowText(params), el('label', null, 'Metric', sel)));
    const shown = sel.value ? [sel.value] : all;
    const metricRows = (d.metrics || []).filter((r) => shown.includes(r.metric));

    // Each metric's interval bar is drawn on that metric's own scale.
    const spans = new Map();
    for (const r of metricRows) {
      const s = spans.get(r.metric) || [Infinity, -Infinity];
      for (const v of [r.low, r.high, r.mean]) if (isNum(v)) { s[0] = Math.min(s[0], v); s[1] = Math.max(s[1], v); }
      spans.set(r.metric, s);
    }
    const intervalNode = (r) => {
      const s = spans.get(r.metric);
      const wrap = el('span', null, isNum(r.low) ? `[${fmtNum(r.low)}, ${fmtNum(r.high)}]` : DASH);
      if (s && s[1] > s[0] && isNum(r.mean)) {
        const pos = (v) => `${(((v - s[0]) / (s[1] - s[0])) * 100).toFixed(1)}%`;
        const bar = el('span', { class: 'interval', title: '95 % interval of the mean' });
        if (isNum(r.low) && isNum(r.high)) {
          const rng = el('span', { class: 'rng' });
          rng.style.left = pos(r.low);
          rng.style.width = `${(((r.high - r.low) / (s[1] - s[0])) * 100).toFixed(1)}%`;
          bar.appendChild(rng);
        }
        const pt = el('span', { class: 'pt' });
        pt.style.left = pos(r.mean);
        pt.style.background = colorFor('variant:' + r.variant);
        bar.appendChild(pt);
        wrap.appendChild(bar);
      }
      return wrap;
    };
    view.appendChild(tableCard({
      title: 'Metrics by variant', name: 'metrics', rows: metricRows, csv: { path: 'quality', query },
      hint: 'mean with its 95 % interval', sort: { key: 'metric', dir: 1 },
      rowKey: (r) => `${r.metric}|${r.variant}`,
      columns: [
        { key: 'metric' }, { key: 'source', node: (r) => badge(r.source ?? DASH, /^grader/.test(r.source || '') ? 'info' : /^implicit/.test(r.source || '') ? 'warn' : '') },
        { key: 'variant' }, { key: 'n' }, { key: 'mean', fmt: fmtNum }, { key: 'low', fmt: fmtNum }, { key: 'high', fmt: fmtNum },
        { key: 'interval', label: 'interval', num: false, value: (r) => r.mean, node: intervalNode },
      ],
    }));

    if (!shown.length) {
      view.appendChild(notice('No feedback in this window: no explicit feedback, grader scores or implicit signals.'));
      return;
    }
    for (const m of shown) {
      const grid = el('div', { class: 'grid two', dataset: { metric: m } });
      view.appendChild(grid);
      const a = alignBy((d.series || []).filter((r) => r.metric === m), (r) => r.variant);
      const c1 = card(m, { hint: 'mean per bucket, by variant', actions: csvLink('quality', query, 'series') });
      const c2 = card(`${m}: distribution`, { hint: '10 bins', actions: csvLink('quality', query, 'histograms') });
      grid.append(c1, c2);
      lineChart(c1, {
        xs: a.xs, xRange: winRange(params), height: 220,
        series: Array.from(a.groups, ([v, rows]) => ({ label: v, data: col(rows, 'mean'), color: colorFor('variant:' + v), spanGaps: true })),
      });
      histogramChart(c2, (d.histograms || []).filter((h) => h.metric === m), PALETTE[all.indexOf(m) % PALETTE.length]);
    }
  }

  // -------------------------------------------------------- Experiments

  async function pageExperiments(ctx, view) {
    if (ctx.arg) return experimentDetail(ctx, view, ctx.arg);
    const d = await api('experiments', commonQuery(ctx.params));
    fresh(ctx, view);
    view.appendChild(pageHead('Experiments', 'canary rollouts, newest first'));
    view.appendChild(tableCard({
      title: 'Experiments', name: 'experiments', rows: d.experiments || [], csv: { path: 'experiments', query: commonQuery(ctx.params) },
      empty: 'No experiments yet.', rowKey: (r) => r.id,
      columns: [
        { key: 'id', node: (r) => el('a', { href: linkTo('experiments', r.id) }, r.id) },
        { key: 'route' }, { key: 'incumbent' }, { key: 'candidate' },
        { key: 'status', node: (r) => badge(r.status ?? DASH, statusKind(r.status)) },
        { key: 'step_name', label: 'step' }, { key: 'candidate_percent', label: 'candidate %' },
        { key: 'status_reason', label: 'reason', wrap: true },
        { key: 'origin', node: (r) => originNode(r.origin) },
        { key: 'created_ms', label: 'created' }, { key: 'updated_ms', label: 'updated' },
      ],
    }));
  }
  function originNode(origin) {
    const m = /^tuner:(.+)$/.exec(origin || '');
    if (m && isAdmin()) return el('a', { href: linkTo('training', m[1]), title: 'the tuner run that started it' }, origin);
    return document.createTextNode(origin || DASH);
  }

  async function experimentDetail(ctx, view, id) {
    const d = await api('experiments/' + encodeURIComponent(id), commonQuery(ctx.params));
    fresh(ctx, view);
    const x = d.experiment || {};
    const evals = d.evaluations || [];
    // What each action applies to; the server has the last word (a 400 shows in the modal).
    const applies = {
      pause: x.status === 'running',
      resume: x.status === 'paused',
      promote: x.status === 'running' || x.status === 'paused',
      rollback: true,
    };
    const actions = ['pause', 'resume', 'promote', 'rollback'].map((action) =>
      el('button', {
        type: 'button', class: 'btn' + (action === 'rollback' ? ' danger' : action === 'promote' ? ' primary' : ''),
        dataset: { action }, disabled: !applies[action],
        title: applies[action] ? `${action} this experiment (asks for confirmation)` : `not while ${x.status}`,
        onclick: () => confirmAction(x.id || id, action),
      }, action[0].toUpperCase() + action.slice(1)));
    view.appendChild(el('div', { class: 'page-head' },
      el('a', { href: linkTo('experiments') }, '← Experiments'),
      el('h1', null, `Experiment ${x.id || id}`),
      badge(x.status ?? DASH, statusKind(x.status)),
      el('div', { class: 'controls' }, actions)));

    const latest = evals.length ? evals[evals.length - 1] : null;
    const info = el('dl', { class: 'kv' });
    const kv = (k, v) => info.append(el('dt', null, k), el('dd', null, v));
    kv('route', x.route ?? DASH);
    kv('incumbent → candidate', `${x.incumbent ?? DASH} → ${x.candidate ?? DASH}`);
    kv('step', `${x.step_name ?? DASH} (${isNum(x.step) ? '#' + x.step : DASH}), candidate ${fmtPercentPoints(x.candidate_percent)}`);
    kv('status reason', x.status_reason || DASH);
    kv('origin', originNode(x.origin));
    kv('tuner run', d.run ? el('a', { href: linkTo('training', d.run) }, d.run) : DASH);
    kv('created / updated', `${fmtTime(x.created_ms)} / ${fmtTime(x.updated_ms)}`);
    if (latest) {
      kv('latest QPD advantage', `${fmtNum(latest.qpd_advantage)} [${fmtNum(latest.qpd_lower)}, ${fmtNum(latest.qpd_upper)}], p = ${fmtP(latest.qpd_p_value)}`);
      kv('latest quality difference', `${fmtNum(latest.quality_difference)} [${fmtNum(latest.quality_lower)}, ${fmtNum(latest.quality_upper)}]`);
      kv('SRM p-value', fmtP(latest.srm_p_value));
    }
    const specBox = el('details', { class: 'spec' }, el('summary', null, 'spec'), el('pre', null, JSON.stringify(x.spec ?? null, null, 2)));
    const grid = el('div', { class: 'grid two' });
    grid.append(card('Summary', null, info, specBox), guardrailCard(x.spec, evals));
    view.appendChild(grid);

    const xs = evals.map((e) => e.ts_ms / 1000);
    const num = (k) => evals.map((e) => (isNum(e[k]) ? e[k] : null));
    const band = cssVar('--chart-band');
    const accent = cssVar('--accent') || PALETTE[0];
    const c1 = card('Quality per dollar: candidate vs incumbent', {
      hint: 'always-valid 95 % interval (band) of the primary metric; above zero the candidate is better',
    });
    view.appendChild(c1);
    lineChart(c1, {
      xs, height: 300,
      series: [
        { label: 'upper', data: num('qpd_upper'), color: alpha(accent.startsWith('#') ? accent : PALETTE[0], 0.5), width: 1, points: { show: false } },
        { label: 'lower', data: num('qpd_lower'), color: alpha(accent.startsWith('#') ? accent : PALETTE[0], 0.5), width: 1, points: { show: false } },
        { label: 'advantage', data: num('qpd_advantage'), color: accent, width: 2 },
        { label: 'zero', ref: true, data: xs.map(() => 0), color: cssVar('--chart-axis'), dash: [4, 4], width: 1, points: { show: false } },
      ],
      bands: [{ series: [1, 2], fill: band }],
    });

    const g2 = el('div', { class: 'grid two' });
    view.appendChild(g2);
    const c2 = card('Weights', { hint: 'as written to the gateway (stepped)' });
    const c3 = card('Quality difference', { hint: 'candidate − incumbent, always-valid interval' });
    g2.append(c2, c3);
    const stepped = uPlot.paths.stepped({ align: 1 });
    lineChart(c2, {
      xs, height: 220, yFmt: fmtNum,
      series: [
        { label: `incumbent ${x.incumbent ?? ''}`, data: num('incumbent_weight'), color: PALETTE[0], paths: stepped, fill: alpha(PALETTE[0], 0.08) },
        { label: `candidate ${x.candidate ?? ''}`, data: num('candidate_weight'), color: PALETTE[1], paths: stepped, fill: alpha(PALETTE[1], 0.12) },
      ],
    });
    lineChart(c3, {
      xs, height: 220,
      series: [
        { label: 'upper', data: num('quality_upper'), color: alpha(PALETTE[2], 0.5), width: 1, points: { show: false } },
        { label: 'lower', data: num('quality_lower'), color: alpha(PALETTE[2], 0.5), width: 1, points: { show: false } },
        { label: 'difference', data: num('quality_difference'), color: PALETTE[2], width: 2 },
        { label: 'zero', ref: true, data: xs.map(() => 0), color: cssVar('--chart-axis'), dash: [4, 4], width: 1, points: { show: false } },
      ],
      bands: [{ series: [1, 2], fill: alpha(PALETTE[2], 0.16) }],
    });

    view.appendChild(tableCard({
      title: 'Decision log', name: 'evaluations', rows: evals, csv: { path: 'experiments/' + encodeURIComponent(id), query: commonQuery(ctx.params) },
      hint: 'every evaluation and action, newest first', sort: { key: 'ts_ms', dir: -1 },
      columns: [
        { key: 'ts_ms', label: 'time' },
        { key: 'action', node: (r) => badge(r.action ?? DASH, statusKind(r.action)) },
        { key: 'actor', value: (r) => (r.manual ? `${r.actor || 'manual'}` : r.actor || 'controller') },
        { key: 'reason_kind', label: 'kind' }, { key: 'reason', wrap: true },
        { key: 'step_name', label: 'step' }, { key: 'candidate_percent', label: 'cand %' },
        { key: 'incumbent_requests', label: 'inc req' }, { key: 'candidate_requests', label: 'cand req' },
        { key: 'incumbent_quality', label: 'inc quality', fmt: fmtNum }, { key: 'candidate_quality', label: 'cand quality', fmt: fmtNum },
        { key: 'incumbent_cost_per_request', label: 'inc $/req' }, { key: 'candidate_cost_per_request', label: 'cand $/req' },
        { key: 'qpd_advantage', label: 'qpd adv', fmt: fmtNum }, { key: 'qpd_p_value', label: 'qpd p' },
        { key: 'srm_p_value', label: 'srm p' },
        { key: 'guardrails_failing', label: 'guardrails', value: (r) => (r.guardrails_failing && r.guardrails_failing.length ? r.guardrails_failing.join(' ') : null), fmt: fmtValue },
        { key: 'status_after', label: 'status after', node: (r) => badge(r.status_after ?? DASH, statusKind(r.status_after)) },
      ],
    }));
  }

  function guardrailCard(spec, evals) {
    const configured = spec && spec.settings && spec.settings.guardrails;
    const names = configured ? Object.keys(configured) : ['error_rate', 'fallback_rate', 'p95_latency', 'ttft', 'cost_per_request'];
    const latest = evals.length ? evals[evals.length - 1] : null;
    const failing = new Map();
    for (const f of (latest && latest.guardrails_failing) || []) {
      const [n, v] = String(f).split(':');
      failing.set(n, v || 'failing');
    }
    const counts = new Map();
    for (const e of evals) for (const f of e.guardrails_failing || []) {
      const n = String(f).split(':')[0];
      counts.set(n, (counts.get(n) || 0) + 1);
    }
    for (const n of failing.keys()) if (!names.includes(n)) names.push(n);
    const items = names.map((n) => {
      const off = configured && configured[n] == null;
      const v = off ? 'off' : !latest ? 'no evaluation' : failing.get(n) || 'pass';
      const kind = off ? 'off' : v === 'pass' ? 'good' : v === 'critical' ? 'bad' : 'warn';
      const t = configured && configured[n];
      return el('div', { class: 'verdict ' + kind, dataset: { guardrail: n } },
        el('div', { class: 'name' }, n.replace(/_/g, ' ')),
        el('div', { class: 'v' }, v.replace(/_/g, ' ')),
        el('div', { class: 'muted small' },
          t ? `allowed ${fmtNum(t.allowed)} · critical ${fmtNum(t.critical)}` : '',
          counts.get(n) ? ` · flagged in ${counts.get(n)} of ${evals.length}` : ''));
    });
    return card('Guardrails', { hint: latest ? `latest evaluation, ${fmtTime(latest.ts_ms)}` : 'no evaluation yet' },
      el('div', { class: 'verdicts' }, items));
  }

  function confirmAction(id, action) {
    const dlg = $('#confirm-dialog');
    const input = $('#confirm-input');
    const ok = $('#confirm-ok');
    const err = $('#confirm-error');
    $('#confirm-title').textContent = `${action[0].toUpperCase() + action.slice(1)} experiment?`;
    $('#confirm-text').textContent = `This will ${action} experiment "${id}" now; it is recorded as a manual action by the dashboard. Type the id to confirm.`;
    input.value = '';
    $('#confirm-reason').value = '';
    err.hidden = true;
    ok.disabled = true;
    ok.textContent = action[0].toUpperCase() + action.slice(1);
    input.oninput = () => { ok.disabled = input.value !== id; };
    $('#confirm-cancel').onclick = () => dlg.close();
    $('#confirm-form').onsubmit = async (e) => {
      e.preventDefault();
      if (input.value !== id) return;
      ok.disabled = true;
      try {
        const reason = $('#confirm-reason').value.trim() || `${action} from the dashboard`;
        await apiPost('experiments/' + encodeURIComponent(id) + '/actions', { action, confirm: input.value, reason });
        dlg.close();
        render();
      } catch (ex) {
        err.hidden = false;
        err.textContent = ex.message;
        ok.disabled = false;
      }
    };
    dlg.showModal();
    input.focus();
  }

  // ----------------------------------------------------------- Training

  async function pageTraining(ctx, view) {
    if (ctx.arg) return runDetail(ctx, view, ctx.arg);
    const d = await api('runs', commonQuery(ctx.params));
    fresh(ctx, view);
    view.appendChild(pageHead('Training', 'tuner runs, newest first'));
    if (d.unavailable) view.appendChild(el('div', { class: 'section' }, notice(String(d.unavailable))));
    view.appendChild(tableCard({
      title: 'Runs', name: 'runs', rows: d.runs || [], csv: { path: 'runs', query: commonQuery(ctx.params) },
      empty: 'No tuner runs (is the server started with --tuner-state?).', rowKey: (r) => r.run,
      columns: [
        { key: 'run', node: (r) => el('a', { href: linkTo('training', r.run) }, r.run) },
        { key: 'job' }, { key: 'state', node: (r) => badge(r.state ?? DASH, statusKind(r.state)) },
        { key: 'outcome', node: (r) => (r.outcome ? badge(r.outcome, statusKind(r.outcome)) : DASH) },
        { key: 'version' },
        { key: 'experiment', node: (r) => (r.experiment ? el('a', { href: linkTo('experiments', r.experiment) }, r.experiment) : DASH) },
        { key: 'started_ms', label: 'started' }, { key: 'updated_ms', label: 'updated' },
      ],
    }));
  }

  async function runDetail(ctx, view, runId) {
    const query = commonQuery(ctx.params);
    const d = await api('runs/' + encodeURIComponent(runId), query);
    fresh(ctx, view);
    const r = d.run || {};
    view.appendChild(el('div', { class: 'page-head' },
      el('a', { href: linkTo('training') }, '← Training'),
      el('h1', null, `Run ${r.run || runId}`),
      badge(r.state ?? DASH, statusKind(r.state)),
      r.outcome ? badge(r.outcome, statusKind(r.outcome)) : null));
    const info = el('dl', { class: 'kv' });
    const kv = (k, v) => info.append(el('dt', null, k), el('dd', null, v));
    kv('job', r.job ?? DASH);
    kv('version', r.version ?? DASH);
    kv('experiment', r.experiment ? el('a', { href: linkTo('experiments', r.experiment) }, r.experiment) : DASH);
    kv('started', fmtTime(r.started_ms));
    kv('updated', fmtTime(r.updated_ms));
    const events = d.events || [];
    const journal = el('div', { class: 'journal' }, events.length ? events.map((e) =>
      el('div', { class: 'ev' }, el('span', { class: 't' }, fmtTime(e.at_ms)), el('span', { class: 'x' }, e.text ?? ''))) : el('p', { class: 'muted' }, 'No events.'));
    const grid = el('div', { class: 'grid two' });
    grid.append(card('Run', null, info), card('Journal', { hint: `${events.length} events, oldest first`, actions: csvLink('runs/' + encodeURIComponent(runId), query, 'events') }, journal));
    view.appendChild(grid);

    const steps = (d.steps || []).slice().sort((a, b) => a.step - b.step);
    const xs = steps.map((s) => s.step);
    const num = (k) => steps.map((s) => (isNum(s[k]) ? s[k] : null));
    const g = el('div', { class: 'grid two' });
    view.appendChild(g);
    const stepAxis = { time: false, xFmt: (v) => fmtNum(v) };
    const mean = num('reward_mean');
    const std = num('reward_std');
    const cR = card('Reward', { hint: 'mean ± std per step; held-out reward', actions: csvLink('runs/' + encodeURIComponent(runId), query, 'steps') });
    const cK = card('KL divergence', { hint: 'to the reference policy' });
    const cL = card('Response length', { hint: 'mean tokens' });
    const cP = card('Pass rate', { hint: 'share of rollouts that pass' });
    g.append(cR, cK, cL, cP);
    lineChart(cR, {
      ...stepAxis, xs, height: 220,
      series: [
        { label: '+std', data: mean.map((m, i) => (m != null && std[i] != null ? m + std[i] : null)), color: alpha(PALETTE[0], 0.35), width: 1, points: { show: false } },
        { label: '−std', data: mean.map((m, i) => (m != null && std[i] != null ? m - std[i] : null)), color: alpha(PALETTE[0], 0.35), width: 1, points: { show: false } },
        { label: 'reward mean', data: mean, color: PALETTE[0], width: 2 },
        { label: 'held-out reward', data: num('heldout_reward'), color: PALETTE[1], width: 2, spanGaps: true },
      ],
      bands: [{ series: [1, 2], fill: alpha(PALETTE[0], 0.12) }],
    });
    lineChart(cK, { ...stepAxis, xs, height: 200, series: [{ label: 'kl', data: num('kl'), color: PALETTE[3] }, { label: 'entropy', data: num('entropy'), color: PALETTE[5], scale: 'y2' }] });
    lineChart(cL, { ...stepAxis, xs, height: 200, yFmt: fmtCount, series: [{ label: 'response length', data: num('response_len_mean'), color: PALETTE[4] }] });
    lineChart(cP, { ...stepAxis, xs, height: 200, yFmt: fmtPct, series: [{ label: 'pass rate', data: num('pass_rate'), color: PALETTE[2] }, { label: 'loss', data: num('loss'), color: PALETTE[6], scale: 'y2', fmt: fmtNum }], y2Fmt: fmtNum });

    view.appendChild(tableCard({
      title: 'Offline gate', name: 'evals', rows: d.evals || [], csv: { path: 'runs/' + encodeURIComponent(runId), query },
      hint: 'eval results of the candidate and the incumbent before the canary', empty: 'No offline evaluation recorded.',
      columns: gateColumns(d.evals || []),
    }));
    const firstSteps = ['step', 'ts_ms', 'reward_mean', 'reward_std', 'heldout_reward', 'pass_rate', 'kl', 'entropy', 'loss', 'response_len_mean'];
    const stepKeys = autoColumns(steps).map((c) => c.key).filter((k) => k !== 'run_id');
    view.appendChild(tableCard({
      title: 'Steps', name: 'steps', rows: steps, csv: { path: 'runs/' + encodeURIComponent(runId), query }, sort: { key: 'step', dir: -1 },
      columns: [...firstSteps.filter((k) => stepKeys.includes(k)), ...stepKeys.filter((k) => !firstSteps.includes(k))].map((key) => ({ key })),
    }));
  }
  function gateColumns(rows) {
    const first = ['config', 'model', 'requests', 'mean_score', 'mean_score_low', 'mean_score_high', 'pass_rate', 'cost_per_request_usd', 'quality_per_dollar'];
    const keys = autoColumns(rows).map((c) => c.key);
    return [...first, ...keys.filter((k) => !first.includes(k))].map((key) => ({ key, fmt: /score/.test(key) ? fmtNum : undefined }));
  }

  // --------------------------------------------------------- Playground

  async function pagePlayground(ctx, view) {
    const d = await api('playground/routes');
    fresh(ctx, view);
    const routes = d.routes || [];
    view.appendChild(pageHead('Playground', 'one prompt, two variants, side by side'));
    if (!routes.length) {
      view.appendChild(notice('No routes in the gateway config.'));
      return;
    }
    const p = ctx.params;
    const routeSel = el('select', { name: 'pg-route' }, routes.map((r) => el('option', { value: r.route }, r.route)));
    routeSel.value = routes.some((r) => r.route === p.get('pg_route')) ? p.get('pg_route') : routes[0].route;
    const varA = el('select', { name: 'pg-a' });
    const varB = el('select', { name: 'pg-b' });
    const fillVariants = () => {
      const r = routes.find((x) => x.route === routeSel.value) || routes[0];
      const vs = r.variants || [];
      for (const [sel, i, key] of [[varA, 0, 'pg_a'], [varB, 1, 'pg_b']]) {
        const want = sel.value || p.get(key);
        sel.replaceChildren(...vs.map((v) => el('option', { value: v }, v)));
        sel.value = vs.includes(want) ? want : vs[Math.min(i, vs.length - 1)] || '';
      }
    };
    routeSel.addEventListener('change', () => { varA.value = ''; varB.value = ''; fillVariants(); });
    fillVariants();
    const maxTokens = el('input', { type: 'number', name: 'max_tokens', min: '1', max: '8192', value: '256' });
    const temp = el('input', { type: 'number', name: 'temperature', min: '0', max: '2', step: '0.1', value: '0.7' });
    const prompt = el('textarea', { name: 'prompt', rows: '5', placeholder: 'Ask something…' });
    prompt.value = 'In two sentences, what is a canary release?';
    const system = el('input', { type: 'text', name: 'system', placeholder: 'optional system message' });
    const send = el('button', { type: 'submit', class: 'btn primary', id: 'pg-send' }, 'Send to both');
    const status = el('span', { class: 'muted small' });
    const form = el('form', { class: 'card', id: 'pg-form' },
      el('div', { class: 'pg-form' },
        el('label', null, 'Route', routeSel), el('label', null, 'Variant A', varA), el('label', null, 'Variant B', varB),
        el('label', null, 'Max tokens', maxTokens), el('label', null, 'Temperature', temp)),
      el('div', { class: 'pg-prompt' }, el('label', { class: 'pg-system' }, 'System message', system)),
      el('div', { class: 'pg-prompt' }, prompt),
      el('div', { class: 'pg-send' }, send, status, el('span', { class: 'muted small' }, 'Ctrl+Enter sends')));
    view.appendChild(form);
    const panes = el('div', { class: 'grid two' });
    view.appendChild(panes);
    prompt.addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) form.requestSubmit(); });
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      if (!prompt.value.trim()) { prompt.focus(); return; }
      const messages = [];
      if (system.value.trim()) messages.push({ role: 'system', content: system.value.trim() });
      messages.push({ role: 'user', content: prompt.value });
      const body = { route: routeSel.value, messages };
      const mt = parseInt(maxTokens.value, 10);
      if (mt > 0) body.max_tokens = mt;
      const t = parseFloat(temp.value);
      if (isNum(t)) body.temperature = t;
      send.disabled = true;
      status.textContent = 'streaming…';
      const a = answerPane('A', varA.value);
      const b = answerPane('B', varB.value);
      panes.replaceChildren(a.card, b.card);
      await Promise.all([a.run({ ...body, variant: varA.value }), b.run({ ...body, variant: varB.value })]);
      if (!ctx.alive()) return;
      send.disabled = false;
      status.textContent = 'done';
    });
  }

  /** One side of the playground: streams an answer and offers 👍/👎 on it. */
  function answerPane(side, variant) {
    const text = el('div', { class: 'answer', dataset: { side } });
    const stat = (label) => { const b = el('b', null, DASH); return [el('span', null, label + ' ', b), b]; };
    const [sTok, bTok] = stat('tokens');
    const [sTtft, bTtft] = stat('first token');
    const [sLat, bLat] = stat('latency');
    const [sCost, bCost] = stat('cost');
    const [sModel, bModel] = stat('model');
    const stats = el('div', { class: 'answer-stats' }, sTok, sTtft, sLat, sCost, sModel);
    const up = el('button', { type: 'button', class: 'btn', disabled: true, title: 'good answer', dataset: { thumb: 'up' } }, '👍 Good');
    const down = el('button', { type: 'button', class: 'btn', disabled: true, title: 'bad answer', dataset: { thumb: 'down' } }, '👎 Bad');
    const recorded = el('span', { class: 'recorded' });
    const idNode = el('span', { class: 'muted small mono' });
    const c = card(`${side}: ${variant}`, { hint: 'streamed' }, text, stats, el('div', { class: 'thumbs' }, up, down, recorded), idNode);
    c.dataset.pane = side;
    let inferenceId = null;
    const vote = async (value) => {
      if (!inferenceId) return;
      up.disabled = true; down.disabled = true;
      recorded.className = 'recorded';
      recorded.textContent = 'recording…';
      try {
        await apiPost('playground/feedback', { inference_id: inferenceId, value });
        (value ? up : down).classList.add('chosen');
        recorded.className = 'recorded good';
        recorded.textContent = `recorded: thumbs ${value ? 'up' : 'down'}`;
        c.dataset.feedback = value ? 'up' : 'down';
      } catch (e) {
        recorded.className = 'recorded bad';
        recorded.textContent = `not recorded: ${e.message}`;
        up.disabled = false; down.disabled = false;
      }
    };
    up.addEventListener('click', () => vote(true));
    down.addEventListener('click', () => vote(false));

    async function run(body) {
      const t0 = performance.now();
      let tFirst = null;
      let content = '';
      let usage = null;
      const headerNum = (res, name) => { const v = res.headers.get(name); const n = v == null ? NaN : Number(v); return Number.isFinite(n) ? n : null; };
      try {
        const res = await apiFetch('playground/chat', { method: 'POST', body });
        inferenceId = res.headers.get('x-flywheel-request-id');
        bModel.textContent = [res.headers.get('x-flywheel-model'), res.headers.get('x-flywheel-provider')].filter(Boolean).join(' · ') || DASH;
        let cost = headerNum(res, 'x-flywheel-cost-usd');
        let pt = headerNum(res, 'x-flywheel-prompt-tokens');
        let ct = headerNum(res, 'x-flywheel-completion-tokens');
        const type = res.headers.get('content-type') || '';
        if (!type.includes('text/event-stream') || !res.body) {
          // A unary answer (the server may not stream).
          const j = await res.json();
          content = (j.choices && j.choices[0] && ((j.choices[0].message && j.choices[0].message.content) || j.choices[0].text)) || '';
          text.textContent = content;
          usage = j.usage || null;
          inferenceId = inferenceId || j.id || null;
          tFirst = performance.now();
        } else {
          const reader = res.body.getReader();
          const dec = new TextDecoder();
          let buf = '';
          let done = false;
          while (!done) {
            const chunk = await reader.read();
            if (chunk.done) break;
            buf += dec.decode(chunk.value, { stream: true });
            const lines = buf.split(/\r?\n/);
            buf = lines.pop();
            for (const line of lines) {
              if (!line.startsWith('data:')) continue;
              const data = line.slice(5).trim();
              if (data === '[DONE]') { done = true; break; }
              let j;
              try { j = JSON.parse(data); } catch (_) { continue; }
              if (j.error) throw new Error(j.error.message || JSON.stringify(j.error));
              if (j.id && !inferenceId) inferenceId = j.id;
              if (j.usage) usage = j.usage;
              if (isNum(j.cost_usd)) cost = j.cost_usd;
              const ch = j.choices && j.choices[0];
              const piece = ch ? ((ch.delta && ch.delta.content) || ch.text || '') : '';
              if (piece) {
                if (tFirst == null) { tFirst = performance.now(); bTtft.textContent = fmtMs(tFirst - t0); }
                content += piece;
                text.textContent = content;
                text.scrollTop = text.scrollHeight;
              }
            }
          }
          try { reader.cancel(); } catch (_) { /* finished */ }
        }
        if (usage) { pt = usage.prompt_tokens ?? pt; ct = usage.completion_tokens ?? ct; }
        if (isNum(usage && usage.cost_usd)) cost = usage.cost_usd;
        const total = performance.now() - t0;
        bLat.textContent = fmtMs(total);
        if (tFirst != null) bTtft.textContent = fmtMs(tFirst - t0);
        bTok.textContent = isNum(pt) || isNum(ct) ? `${fmtCount(pt)} in · ${fmtCount(ct)} out` : DASH;
        bCost.textContent = isNum(cost) ? fmtUSD(cost) : DASH;
        if (!isNum(cost) && inferenceId) {
          // A stream's cost is known once its attempts end: the server reads
          // it from the answer's event, waiting for it to ship.
          bCost.textContent = '…';
          sCost.title = 'read from the answer\'s event in ClickHouse';
          const id = inferenceId;
          api('playground/cost/' + encodeURIComponent(id)).then((found) => {
            bCost.textContent = fmtUSD(found.cost_usd);
            c.dataset.cost = String(found.cost_usd);
          }, (e) => {
            bCost.textContent = DASH;
            sCost.title = `not known: ${e.message}`;
          });
        } else if (isNum(cost)) {
          c.dataset.cost = String(cost);
        }
        if (!content) text.appendChild(el('span', { class: 'muted' }, '(empty answer)'));
        idNode.textContent = inferenceId ? `inference ${inferenceId}` : 'no inference id: feedback unavailable';
        c.dataset.done = 'ok';
        if (inferenceId) { up.disabled = false; down.disabled = false; }
      } catch (e) {
        text.classList.add('err');
        text.textContent = (content ? content + '\n\n' : '') + `Error: ${e.message}`;
        bLat.textContent = fmtMs(performance.now() - t0);
        c.dataset.done = 'error';
      }
    }
    return { card: c, run };
  }

  // ----------------------------------------------------------------- boot

  async function boot() {
    setupTheme();
    setupFilters();
    setupTokenDialog();
    window.addEventListener('hashchange', render);
    if (!location.hash) history.replaceState(null, '', '#/overview');
    if (!state.token) {
      updateNav(parseHash().page);
      $('#view').replaceChildren(notice('Sign in with a token to see the dashboards.'));
      showTokenDialog('');
      return;
    }
    try {
      await loadSession();
    } catch (e) {
      if (e.status !== 401) $('#view').replaceChildren(notice(`Could not reach the API: ${e.message}`, true));
      return;
    }
    render();
  }

  // Exposed for the browser test and for debugging from the console.
  window.flywheel = { fmtUSD, fmtCount, fmtMs, fmtPct, render, state };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
