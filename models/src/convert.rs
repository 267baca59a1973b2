//! GGUF -> HF-style directory: config.json, tokenizer files, and an F32 `model.safetensors`
//! written one tensor at a time (only one dequantized tensor is in memory at once).

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io::{BufReader, BufWriter, Write},
    path::{Path, PathBuf},
    time::Instant,
};

use candle_core::{quantized::gguf_file::Content, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    error::{Context, Error, Result},
    gguf::{Arch, Hparams, Meta},
    hash,
    tokenizer::{build_tokenizer_json, tokenizer_config_json, GgufVocab},
    ModelId,
};

/// Bumped whenever the converter's output changes; a cached `hf/` directory made by an older
/// converter is rebuilt by `fetch`.
pub const CONVERTER_VERSION: u32 = 1;

/// The manifest written last into every converted directory.
pub const MANIFEST_FILE: &str = "flywheel-model.json";

const SAFETENSORS_FILE: &str = "model.safetensors";

/// What a converted directory was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Known model name (`smollm2`, ...), when the GGUF is one of the project's models.
    pub model: Option<String>,
    /// `pip` requirements the GGUF came from (empty when unknown).
    pub source_packages: Vec<String>,
    /// Files inside those wheels, concatenated in order.
    pub source_files: Vec<String>,
    pub gguf_sha256: String,
    pub gguf_bytes: u64,
    /// `general.name` of the GGUF.
    pub gguf_name: Option<String>,
    /// GGUF architecture (`llama`, `qwen2`).
    pub architecture: String,
    /// HF architecture written to config.json.
    pub hf_architecture: String,
    pub torch_dtype: String,
    pub tensors: usize,
    pub parameters: u64,
    pub converter: String,
    pub converter_version: u32,
}

impl Manifest {
    /// Reads `dir/flywheel-model.json`.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&path).ctx(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).ctx(|| format!("parsing {}", path.display()))
    }
}

/// Options of [`convert_with`].
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// The GGUF's sha256 when the caller already knows it (else it is read from the
    /// `model.gguf.sha256` marker when that matches the file's size, else computed).
    pub gguf_sha256: Option<String>,
    /// No progress lines on stderr.
    pub quiet: bool,
}

/// The result of a conversion.
#[derive(Debug, Clone)]
pub struct ConvertSummary {
    pub out_dir: PathBuf,
    pub manifest: Manifest,
    pub safetensors_bytes: u64,
    pub seconds: f64,
}

/// Converts `gguf` into an HF-style directory `out_dir` (replaced if it holds an earlier
/// conversion; the new one is built next to it and renamed into place).
pub fn convert(gguf: &Path, out_dir: &Path) -> Result<ConvertSummary> {
    convert_with(gguf, out_dir, &ConvertOptions::default())
}

/// Undoes llama.cpp's Q/K row permutation (`convert_hf_to_gguf.py` `LlamaModel.permute`):
/// `w.reshape(n_head, rows/n_head/2, 2, cols).swapaxes(1, 2).reshape(rows, cols)`.
/// `n_head` is the attention head count for q_proj and the KV head count for k_proj. A 1-D
/// tensor (a bias) is treated as one column.
pub fn unpermute_qk(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let (rows, cols, one_d) = match w.dims() {
        [rows] => (*rows, 1, true),
        [rows, cols] => (*rows, *cols, false),
        dims => candle_core::bail!("unpermute_qk: expected a 1-D or 2-D tensor, got {dims:?}"),
    };
    if n_head == 0 || rows % (2 * n_head) != 0 {
        candle_core::bail!(
            "unpermute_qk: {rows} rows are not divisible into {n_head} heads of even size"
        );
    }
    let out = w
        .reshape((n_head, rows / n_head / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?;
    if one_d {
        out.reshape(rows)
    } else {
        Ok(out)
    }
}

#[derive(Debug, Clone, Copy)]
enum Transform {
    None,
    Unpermute(usize),
}

#[derive(Debug)]
struct PlanEntry {
    gguf: String,
    hf: String,
    shape: Vec<usize>,
    transform: Transform,
}

/// Maps every GGUF tensor to its HF name, layout and expected shape; errors on anything
/// missing, unknown or mis-shaped.
fn plan(meta: &Meta<'_>, hp: &Hparams) -> Result<(Vec<PlanEntry>, usize, bool, bool)> {
    let infos = &meta.content.tensor_infos;
    let shape_of = |name: &str| infos.get(name).map(|i| i.shape.dims().to_vec());
    let embd = shape_of("token_embd.weight")
        .ok_or_else(|| meta.err("missing tensor `token_embd.weight`"))?;
    let vocab = match embd[..] {
        [v, h] if h == hp.hidden => v,
        _ => {
            return Err(meta.err(format!(
                "token_embd.weight has shape {embd:?}, expected [vocab, {}]",
                hp.hidden
            )))
        }
    };
    let (h, hd, ff) = (hp.hidden, hp.head_dim, hp.intermediate);
    let (q_out, kv_out) = (hp.n_head * hd, hp.n_kv_head * hd);
    let permuted = hp.arch.qk_permuted();
    let has_bias = infos.contains_key("blk.0.attn_q.bias");
    if hp.arch == Arch::Qwen2 && !has_bias {
        return Err(meta.err("qwen2 GGUF without q/k/v biases"));
    }
    let has_output = infos.contains_key("output.weight");

    let mut entries = Vec::new();
    let mut add = |gguf: String, hf: String, shape: Vec<usize>, transform: Transform| {
        entries.push(PlanEntry {
            gguf,
            hf,
            shape,
            transform,
        })
    };
    add(
        "token_embd.weight".into(),
        "model.embed_tokens.weight".into(),
        vec![vocab, h],
        Transform::None,
    );
    let q_tr = if permuted {
        Transform::Unpermute(hp.n_head)
    } else {
        Transform::None
    };
    let k_tr = if permuted {
        Transform::Unpermute(hp.n_kv_head)
    } else {
        Transform::None
    };
    for i in 0..hp.n_layer {
        let g = |s: &str| format!("blk.{i}.{s}");
        let l = |s: &str| format!("model.layers.{i}.{s}");
        add(
            g("attn_norm.weight"),
            l("input_layernorm.weight"),
            vec![h],
            Transform::None,
        );
        add(
            g("attn_q.weight"),
            l("self_attn.q_proj.weight"),
            vec![q_out, h],
            q_tr,
        );
        add(
            g("attn_k.weight"),
            l("self_attn.k_proj.weight"),
            vec![kv_out, h],
            k_tr,
        );
        add(
            g("attn_v.weight"),
            l("self_attn.v_proj.weight"),
            vec![kv_out, h],
            Transform::None,
        );
        if has_bias {
            add(
                g("attn_q.bias"),
                l("self_attn.q_proj.bias"),
                vec![q_out],
                q_tr,
            );
            add(
                g("attn_k.bias"),
                l("self_attn.k_proj.bias"),
                vec![kv_out],
                k_tr,
            );
            add(
                g("attn_v.bias"),
                l("self_attn.v_proj.bias"),
                vec![kv_out],
                Transform::None,
            );
        }
        add(
            g("attn_output.weight"),
            l("self_attn.o_proj.weight"),
            vec![h, q_out],
            Transform::None,
        );
        add(
            g("ffn_norm.weight"),
            l("post_attention_layernorm.weight"),
            vec![h],
            Transform::None,
        );
        add(
            g("ffn_gate.weight"),
            l("mlp.gate_proj.weight"),
            vec![ff, h],
            Transform::None,
        );
        add(
            g("ffn_up.weight"),
            l("mlp.up_proj.weight"),
            vec![ff, h],
            Transform::None,
        );
        add(
            g("ffn_down.weight"),
            l("mlp.down_proj.weight"),
            vec![h, ff],
            Transform::None,
        );
    }
    add(
        "output_norm.weight".into(),
        "model.norm.weight".into(),
        vec![h],
        Transform::None,
    );
    if has_output {
        add(
            "output.weight".into(),
            "lm_head.weight".into(),
            vec![vocab, h],
            Transform::None,
        );
    }

    // Every planned tensor must exist with the expected shape, and every GGUF tensor must be
    // planned.
    let mut problems = Vec::new();
    for e in &entries {
        match shape_of(&e.gguf) {
            None => problems.push(format!("missing tensor `{}`", e.gguf)),
            Some(s) if s != e.shape => problems.push(format!(
                "tensor `{}` has shape {s:?}, expected {:?}",
                e.gguf, e.shape
            )),
            Some(_) => {}
        }
    }
    let planned: BTreeSet<&str> = entries.iter().map(|e| e.gguf.as_str()).collect();
    let unknown: BTreeSet<&str> = infos
        .keys()
        .map(String::as_str)
        .filter(|n| !planned.contains(n))
        .collect();
    if !unknown.is_empty() {
        problems.push(format!("unexpected tensors {unknown:?}"));
    }
    if !problems.is_empty() {
        return Err(meta.err(problems.join("; ")));
    }
    Ok((entries, vocab, has_output, has_bias))
}

fn config_json(
    hp: &Hparams,
    vocab_size: usize,
    tied: bool,
    bias: bool,
    v: &GgufVocab,
) -> serde_json::Value {
    let mut cfg = json!({
        "architectures": [hp.arch.hf_architecture()],
        "model_type": hp.arch.model_type(),
        "hidden_size": hp.hidden,
        "intermediate_size": hp.intermediate,
        "num_attention_heads": hp.n_head,
        "num_key_value_heads": hp.n_kv_head,
        "num_hidden_layers": hp.n_layer,
        "head_dim": hp.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": hp.rms_eps,
        "rope_theta": hp.rope_theta,
        "rope_scaling": null,
        "max_position_embeddings": hp.context_length,
        "vocab_size": vocab_size,
        "tie_word_embeddings": tied,
        "bos_token_id": v.bos,
        "eos_token_id": v.eos,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": true,
        "torch_dtype": "float32",
    });
    // A literal object: `as_object_mut` is always `Some`.
    if let Some(obj) = cfg.as_object_mut() {
        match hp.arch {
            Arch::Llama => {
                obj.insert("attention_bias".into(), json!(bias));
                obj.insert("mlp_bias".into(), json!(false));
                obj.insert("pretraining_tp".into(), json!(1));
            }
            Arch::Qwen2 => {
                obj.insert("use_sliding_window".into(), json!(false));
                obj.insert("sliding_window".into(), json!(null));
                obj.insert("max_window_layers".into(), json!(hp.n_layer));
            }
        }
    }
    cfg
}

fn generation_config_json(v: &GgufVocab) -> serde_json::Value {
    let stops = v.stop_ids();
    let eos = match stops.as_slice() {
        [] => json!(null),
        [one] => json!(one),
        many => json!(many),
    };
    json!({
        "bos_token_id": v.bos,
        "eos_token_id": eos,
        "pad_token_id": v.pad.or(v.eos),
    })
}

fn write_json(dir: &Path, name: &str, value: &impl Serialize) -> Result<()> {
    let path = dir.join(name);
    let mut text = serde_json::to_string_pretty(value).ctx(|| format!("serializing {name}"))?;
    text.push('\n');
    fs::write(&path, text).ctx(|| format!("writing {}", path.display()))
}

/// Writes `f32` values little-endian through a buffer.
fn write_f32s(w: &mut impl Write, values: &[f32]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1 << 20);
    for chunk in values.chunks(1 << 18) {
        buf.clear();
        for v in chunk {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        w.write_all(&buf)?;
    }
    Ok(())
}

/// Streams the tensors into a safetensors file: header first (all shapes are known up
/// front), then each tensor as it is dequantized.
fn write_safetensors(
    path: &Path,
    gguf_path: &Path,
    content: &Content,
    reader: &mut BufReader<File>,
    entries: &[PlanEntry],
    quiet: bool,
) -> Result<(u64, u64)> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({ "format": "pt" }));
    let mut offset = 0u64;
    let mut params = 0u64;
    for e in entries {
        let n: usize = e.shape.iter().product();
        params += n as u64;
        let end = offset + 4 * n as u64;
        header.insert(
            e.hf.clone(),
            json!({ "dtype": "F32", "shape": e.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut header = serde_json::to_string(&header).ctx(|| "serializing safetensors header")?;
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let file = File::create(path).ctx(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 22, file);
    let io = |e| Error::Io {
        context: format!("writing {}", path.display()),
        source: e,
    };
    w.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    w.write_all(header.as_bytes()).map_err(io)?;

    let cpu = Device::Cpu;
    let start = Instant::now();
    let mut next_report = 1;
    for (k, e) in entries.iter().enumerate() {
        let what = || format!("{}: tensor `{}`", gguf_path.display(), e.gguf);
        let qt = content.tensor(reader, &e.gguf, &cpu).ctx(what)?;
        let dtype = qt.dtype();
        let mut t = qt.dequantize(&cpu).ctx(what)?;
        drop(qt);
        if let Transform::Unpermute(n_head) = e.transform {
            t = unpermute_qk(&t, n_head).ctx(what)?;
        }
        if t.dims() != e.shape.as_slice() {
            return Err(Error::Gguf {
                path: gguf_path.to_path_buf(),
                message: format!(
                    "tensor `{}` dequantized to {:?}, expected {:?}",
                    e.gguf,
                    t.dims(),
                    e.shape
                ),
            });
        }
        let values = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).ctx(what)?;
        drop(t);
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::Gguf {
                path: gguf_path.to_path_buf(),
                message: format!(
                    "tensor `{}` ({dtype:?}) has a non-finite value at {i}",
                    e.gguf
                ),
            });
        }
        write_f32s(&mut w, &values).map_err(io)?;
        // Progress at each quarter.
        if !quiet && (k + 1) * 4 >= next_report * entries.len() {
            eprintln!(
                "    {}/{} tensors dequantized ({:.1} s)",
                k + 1,
                entries.len(),
                start.elapsed().as_secs_f64()
            );
            while (k + 1) * 4 >= next_report * entries.len() {
                next_report += 1;
            }
        }
    }
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    let bytes = 8 + header.len() as u64 + offset;
    let actual = fs::metadata(path)
        .ctx(|| format!("stat {}", path.display()))?
        .len();
    if actual != bytes {
        return Err(Error::InvalidFile {
            path: path.to_path_buf(),
            message: format!("wrote {actual} bytes, expected {bytes}"),
        });
    }
    Ok((bytes, params))
}

/// The sha256 of a GGUF: given, else from a marker matching its size, else computed.
fn gguf_sha256(gguf: &Path, given: Option<&str>) -> Result<(String, u64)> {
    let size = fs::metadata(gguf)
        .ctx(|| format!("reading {}", gguf.display()))?
        .len();
    if let Some(sha) = given {
        return Ok((sha.to_ascii_lowercase(), size));
    }
    if let Some((sha, marker_size)) = hash::read_marker(gguf) {
        if marker_size == size {
            return Ok((sha, size));
        }
    }
    Ok((hash::sha256_file(gguf)?, size))
}

/// [`convert`] with options.
pub fn convert_with(gguf: &Path, out_dir: &Path, opts: &ConvertOptions) -> Result<ConvertSummary> {
    let start = Instant::now();
    let (sha, gguf_bytes) = gguf_sha256(gguf, opts.gguf_sha256.as_deref())?;
    let known = ModelId::from_gguf_sha256(&sha);

    let file = File::open(gguf).ctx(|| format!("opening {}", gguf.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let content = Content::read(&mut reader).map_err(|e| Error::Gguf {
        path: gguf.to_path_buf(),
        message: format!("cannot parse GGUF: {e}"),
    })?;
    let meta = Meta::new(gguf, &content);
    let hp = Hparams::read(&meta)?;
    let vocab = GgufVocab::read(&meta)?;
    let (entries, vocab_size, has_output, has_bias) = plan(&meta, &hp)?;
    if vocab.tokens.len() > vocab_size {
        return Err(meta.err(format!(
            "{} tokens but only {vocab_size} embedding rows",
            vocab.tokens.len()
        )));
    }

    // Build next to the destination, then swap it in.
    let out_name = out_dir
        .file_name()
        .ok_or_else(|| Error::InvalidFile {
            path: out_dir.to_path_buf(),
            message: "output directory has no name".into(),
        })?
        .to_string_lossy()
        .into_owned();
    let parent = match out_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).ctx(|| format!("creating {}", parent.display()))?;
    if out_dir.exists() {
        let ours = out_dir.join(MANIFEST_FILE).exists()
            || fs::read_dir(out_dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !ours {
            return Err(Error::InvalidFile {
                path: out_dir.to_path_buf(),
                message: format!("exists and holds no {MANIFEST_FILE}; refusing to replace it"),
            });
        }
    }
    let tmp = parent.join(format!(".{out_name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).ctx(|| format!("removing {}", tmp.display()))?;
    }
    fs::create_dir_all(&tmp).ctx(|| format!("creating {}", tmp.display()))?;

    let result = (|| -> Result<(Manifest, u64)> {
        if !opts.quiet {
            eprintln!(
                "==> converting {} ({}, {} layers, hidden {}, vocab {vocab_size}) -> {}",
                gguf.display(),
                hp.arch.gguf_name(),
                hp.n_layer,
                hp.hidden,
                out_dir.display()
            );
        }
        let tokenizer = build_tokenizer_json(&vocab).map_err(|m| meta.err(m))?;
        fs::write(tmp.join("tokenizer.json"), tokenizer).ctx(|| "writing tokenizer.json")?;
        write_json(
            &tmp,
            "tokenizer_config.json",
            &tokenizer_config_json(&vocab, hp.context_length),
        )?;
        write_json(
            &tmp,
            "config.json",
            &config_json(&hp, vocab_size, !has_output, has_bias, &vocab),
        )?;
        write_json(
            &tmp,
            "generation_config.json",
            &generation_config_json(&vocab),
        )?;
        let st_path = tmp.join(SAFETENSORS_FILE);
        let (st_bytes, params) =
            write_safetensors(&st_path, gguf, &content, &mut reader, &entries, opts.quiet)?;
        let manifest = Manifest {
            model: known.map(|id| id.name().to_string()),
            source_packages: known
                .map(|id| id.source().parts.iter().map(|p| p.requirement()).collect())
                .unwrap_or_default(),
            source_files: known
                .map(|id| {
                    id.source()
                        .parts
                        .iter()
                        .map(|p| p.member.to_string())
                        .collect()
                })
                .unwrap_or_default(),
            gguf_sha256: sha.clone(),
            gguf_bytes,
            gguf_name: hp.name.clone(),
            architecture: hp.arch.gguf_name().into(),
            hf_architecture: hp.arch.hf_architecture().into(),
            torch_dtype: "float32".into(),
            tensors: entries.len(),
            parameters: params,
            converter: format!("flywheel-models {}", env!("CARGO_PKG_VERSION")),
            converter_version: CONVERTER_VERSION,
        };
        // Written last: its presence marks a complete directory.
        write_json(&tmp, MANIFEST_FILE, &manifest)?;
        Ok((manifest, st_bytes))
    })();
    let (manifest, safetensors_bytes) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };

    let old = parent.join(format!(".{out_name}.old-{}", std::process::id()));
    if out_dir.exists() {
        fs::rename(out_dir, &old).ctx(|| format!("moving {} aside", out_dir.display()))?;
    }
    fs::rename(&tmp, out_dir)
        .ctx(|| format!("renaming {} to {}", tmp.display(), out_dir.display()))?;
    if old.exists() {
        fs::remove_dir_all(&old).ctx(|| format!("removing {}", old.display()))?;
    }
    let summary = ConvertSummary {
        out_dir: out_dir.to_path_buf(),
        manifest,
        safetensors_bytes,
        seconds: start.elapsed().as_secs_f64(),
    };
    if !opts.quiet {
        eprintln!(
            "==> wrote {} ({} tensors, {:.1} M params, model.safetensors {:.1} MB) in {:.1} s",
            out_dir.display(),
            summary.manifest.tensors,
            summary.manifest.parameters as f64 / 1e6,
            safetensors_bytes as f64 / 1e6,
            summary.seconds
        );
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HF -> GGUF, as llama.cpp's `permute`: reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2).
    fn permute(w: &Tensor, n_head: usize) -> Tensor {
        let (rows, cols) = w.dims2().unwrap();
        w.reshape((n_head, 2, rows / n_head / 2, cols))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((rows, cols))
            .unwrap()
    }

    fn matrix(rows: &[usize], cols: usize) -> Tensor {
        let data: Vec<f32> = rows
            .iter()
            .flat_map(|&r| (0..cols).map(move |c| (r * 10 + c) as f32))
            .collect();
        Tensor::from_vec(data, (rows.len(), cols), &Device::Cpu).unwrap()
    }

    #[test]
    fn unpermute_matches_hand_computed_rows() {
        // 2 heads of 6 rows (3 rotary pairs each), 2 columns. llama.cpp stores a head's HF rows
        // [0 1 2 | 3 4 5] (halves for rotate_half) interleaved as [0 3 1 4 2 5].
        let gguf = matrix(&[0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11], 2);
        let hf = unpermute_qk(&gguf, 2).unwrap();
        let expected = matrix(&(0..12).collect::<Vec<_>>(), 2);
        assert_eq!(
            hf.to_vec2::<f32>().unwrap(),
            expected.to_vec2::<f32>().unwrap()
        );
        // And it is the inverse of llama.cpp's permutation.
        let back = permute(&hf, 2);
        assert_eq!(
            back.to_vec2::<f32>().unwrap(),
            gguf.to_vec2::<f32>().unwrap()
        );
    }

    #[test]
    fn unpermute_single_head_and_bias() {
        // One head of 4 rows: GGUF [0 2 1 3] -> HF [0 1 2 3]; a 1-D bias is handled the same way.
        let bias = Tensor::new(&[0f32, 2., 1., 3.], &Device::Cpu).unwrap();
        let out = unpermute_qk(&bias, 1).unwrap();
        assert_eq!(out.to_vec1::<f32>().unwrap(), vec![0., 1., 2., 3.]);
        let w = matrix(&[0, 2, 1, 3], 3);
        let out = unpermute_qk(&w, 1).unwrap();
        assert_eq!(
            out.to_vec2::<f32>().unwrap(),
            matrix(&[0, 1, 2, 3], 3).to_vec2::<f32>().unwrap()
        );
    }

    #[test]
    fn unpermute_round_trips_random_kv_shape() {
        // SmolLM2 k_proj shape: 3 KV heads x 64 = 192 rows, 576 columns.
        let w = Tensor::randn(0f32, 1., (192, 576), &Device::Cpu).unwrap();
        let back = unpermute_qk(&permute(&w, 3), 3).unwrap();
        let diff = (back - &w)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
    }

    #[test]
    fn unpermute_rejects_bad_shapes() {
        let w = matrix(&[0, 1, 2], 2);
        assert!(unpermute_qk(&w, 1).is_err());
        assert!(unpermute_qk(&w, 0).is_err());
    }
}
