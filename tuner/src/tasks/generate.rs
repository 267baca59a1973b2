//! The generators behind [`super::Task`]: word lists, templates and a
//! small PRNG whose sequence is fixed forever (splitmix64), so a seed
//! names the same suite on every machine and every version of `rand`.

use std::sync::LazyLock;

use serde_json::{json, Map, Value};

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.next_u64() as usize % xs.len()]
    }
}

pub struct Generated {
    pub system: String,
    pub user: String,
    pub reference: Value,
    pub schema: Option<Value>,
    pub extra: Map<String, Value>,
}

const FIRST: &[&str] = &[
    "Maria",
    "James",
    "Aiko",
    "Oluwaseun",
    "Priya",
    "Lars",
    "Fatima",
    "Diego",
    "Chen",
    "Ingrid",
    "Kwame",
    "Sofia",
    "Mateo",
    "Amara",
    "Tomasz",
    "Leila",
    "Ravi",
    "Elena",
    "Hiroshi",
    "Nadia",
];
const LAST: &[&str] = &[
    "Lopez", "Okafor", "Tanaka", "Schmidt", "Haddad", "Novak", "Silva", "Kowalski", "Nguyen",
    "Berg", "Mensah", "Rossi", "Patel", "Ivanova", "Dubois", "Khan",
];
const CITIES: &[&str] = &[
    "Lisbon", "Oslo", "Nairobi", "Osaka", "Toronto", "Krakow", "Lima", "Hanoi", "Dublin", "Accra",
    "Porto", "Seville", "Tallinn", "Perth", "Quito", "Ghent",
];
const JOBS: &[&str] = &[
    "nurse",
    "carpenter",
    "data analyst",
    "pilot",
    "baker",
    "architect",
    "teacher",
    "electrician",
    "pharmacist",
    "journalist",
    "welder",
    "translator",
];
/// What each of [`JOBS`] does, in the same order: extraction texts describe
/// the work and the answer must name the job.
const JOB_CLUES: &[&str] = &[
    "cares for patients on a hospital ward",
    "builds furniture and roofs from wood",
    "turns spreadsheets into reports",
    "flies passenger jets",
    "makes bread before dawn",
    "designs buildings",
    "teaches at a primary school",
    "wires houses",
    "dispenses medicine at a pharmacy",
    "writes for a newspaper",
    "joins steel beams",
    "turns novels into other languages",
];

pub static EXTRACTION_SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "type": "object",
        "required": ["name", "city", "age", "occupation"],
        "additionalProperties": false,
        "properties": {
            "name": {"type": "string"}, "city": {"type": "string"},
            "age": {"type": "integer"}, "occupation": {"type": "string"}
        }
    })
});

/// Four fields, with distractors (a former and a future city, a relative's
/// age), the name to be written "Last, First", and the age given as a birth
/// year (the reference year is stated): copying the first city, number or
/// name is wrong.
pub fn extraction(rng: &mut Rng) -> Generated {
    let (first, last) = (*rng.pick(FIRST), *rng.pick(LAST));
    let name = format!("{first} {last}");
    let city = *rng.pick(CITIES);
    let mut old_city = *rng.pick(CITIES);
    while old_city == city {
        old_city = *rng.pick(CITIES);
    }
    let age = rng.range(19, 88);
    let other_age = (age + rng.range(-12, 12)).max(1);
    let job_index = rng.range(0, JOBS.len() as i64 - 1) as usize;
    let (job, clue) = (JOBS[job_index], JOB_CLUES[job_index]);
    let relative = *rng.pick(&["sister", "brother", "cousin", "neighbour"]);
    let born = REFERENCE_YEAR - age;
    let mut next_city = *rng.pick(CITIES);
    while next_city == city || next_city == old_city {
        next_city = *rng.pick(CITIES);
    }
    let text = match rng.range(0, 2) {
        0 => format!(
            "After years in {old_city}, {name} (born in {born}) now lives in {city} and {clue}; a move to {next_city} is planned for next year. Their {relative} is {other_age}."
        ),
        1 => format!(
            "{name}, born {born}, relocated from {old_city} to {city} and {clue}. A {relative}, aged {other_age}, stayed behind."
        ),
        _ => format!(
            "{name} grew up in {old_city}. Born in {born}, {first} {clue} and is based in {city}, near a {relative} who turned {other_age}, and dreams of {next_city}."
        ),
    };
    Generated {
        system: format!(
            "You extract facts into JSON. Reply with one JSON object with the keys name (written \"Last, First\"), city (where the person lives now), age (an integer, in {REFERENCE_YEAR}) and occupation (one of: {}), and nothing else.",
            JOBS.join(", ")
        ),
        user: text,
        reference: json!({"name": format!("{last}, {first}"), "city": city, "age": age, "occupation": job}),
        schema: Some(EXTRACTION_SCHEMA.clone()),
        extra: Map::new(),
    }
}

/// The year ages are computed in, stated in the prompt.
const REFERENCE_YEAR: i64 = 2026;

pub static ARITHMETIC_SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    json!({"type": "object", "required": ["answer"], "additionalProperties": false,
           "properties": {"answer": {"type": "integer"}}})
});

/// Two operations with precedence: a 135M model gets a single sum or
/// product of small numbers right now and then, chained ones rarely.
pub fn arithmetic(rng: &mut Rng) -> Generated {
    let (a, b, c) = (rng.range(2, 19), rng.range(2, 9), rng.range(1, 30));
    let (expr, value) = match rng.range(0, 2) {
        0 => (format!("{a} * {b} + {c}"), a * b + c),
        1 => (format!("{c} + {a} * {b}"), c + a * b),
        _ => (format!("{a} * {b} - {c}"), a * b - c),
    };
    Generated {
        system: "You are a calculator. Reply with one JSON object {\"answer\": <integer>} and nothing else.".into(),
        user: format!("Compute {expr}."),
        reference: json!({"answer": value}),
        schema: Some(ARITHMETIC_SCHEMA.clone()),
        extra: Map::new(),
    }
}

const TOPICS: &[(&str, &str)] = &[
    ("keeping bees", "honey"),
    ("learning to swim", "breath"),
    ("city cycling", "helmet"),
    ("baking bread", "yeast"),
    ("night photography", "tripod"),
    ("growing tomatoes", "sunlight"),
    ("saving money", "budget"),
    ("running a marathon", "pace"),
    ("camping in winter", "layers"),
    ("learning chess", "opening"),
    ("brewing coffee", "grind"),
    ("moving house", "boxes"),
    ("painting a room", "primer"),
    ("starting a podcast", "microphone"),
    ("caring for a puppy", "leash"),
    ("planting a hedge", "spade"),
    ("learning guitar", "chords"),
    ("hiking in the rain", "boots"),
    ("fixing a bike tyre", "patch"),
    ("cooking rice", "water"),
];

/// Three checkable constraints at once: exactly three "- " bullet lines,
/// no capital letters, and a given keyword.
pub fn instructions(rng: &mut Rng) -> Generated {
    let (topic, keyword) = *rng.pick(TOPICS);
    let audience = *rng.pick(&[
        "a beginner",
        "a child",
        "a busy parent",
        "a student",
        "a retiree",
        "a nurse on night shifts",
        "a teenager",
        "a new neighbour",
    ]);
    let tone = *rng.pick(&["friendly", "practical", "cheerful", "calm", "short"]);
    let mut extra = Map::new();
    extra.insert("keyword".into(), Value::String(keyword.into()));
    Generated {
        system: "Follow the formatting instructions exactly.".into(),
        user: format!(
            "Give {audience} {tone} tips on {topic}. Write exactly three lines, each starting with \"- \". Use only lowercase letters (no capitals at all). Use the word \"{keyword}\"."
        ),
        reference: Value::String(format!(
            "- start small with {topic}.\n- ask someone about the {keyword}.\n- practice a little every week."
        )),
        schema: None,
        extra,
    }
}

pub static POLICY_SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "type": "object", "required": ["decision"],
        "properties": {"decision": {"enum": ["allow", "refuse", "escalate"]}}
    })
});

const POLICY: &str = "You are a support agent. Apply these rules in order and reply with one JSON object {\"decision\": \"allow\" | \"refuse\" | \"escalate\"} and nothing else.\n\
1. A request about another person's account, orders or data: refuse.\n\
2. A refund of at most $50: allow. A refund above $50: escalate.\n\
3. Closing or deleting an account: escalate.\n\
4. A password reset or a change of delivery address for the customer's own account: allow.";

/// The decision needs the right rule, and for refunds, a comparison.
pub fn policy(rng: &mut Rng) -> Generated {
    let amount = rng.range(5, 140);
    let name = *rng.pick(FIRST);
    // An order number makes every ticket distinct without bearing on the rules.
    let order = rng.range(10_000, 99_999);
    let (ticket, decision) = match rng.range(0, 5) {
        0 => (format!("Hi, my order #{order} arrived broken. Can I get a refund of ${amount}?"), if amount <= 50 { "allow" } else { "escalate" }),
        1 => (format!("Please refund the ${amount} I paid twice last week."), if amount <= 50 { "allow" } else { "escalate" }),
        2 => (format!("Can you tell me what my coworker {name} ordered last month (order #{order})? I want to buy the same."), "refuse"),
        3 => (format!("I want my account deleted along with all my data, please. My last order was #{order}."), "escalate"),
        4 => (format!("I forgot my password, can you send me a reset link for my account? (order #{order})"), "allow"),
        _ => (format!("My partner {name} asked me to change the delivery address on their order to mine."), "refuse"),
    };
    Generated {
        system: POLICY.into(),
        user: ticket,
        reference: json!({"decision": decision}),
        schema: Some(POLICY_SCHEMA.clone()),
        extra: Map::new(),
    }
}

pub static TOOL_CALL_SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "type": "object", "required": ["name", "arguments"], "additionalProperties": false,
        "properties": {
            "name": {"const": "get_forecast"},
            "arguments": {
                "type": "object", "required": ["city", "days", "unit", "hourly"], "additionalProperties": false,
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer", "minimum": 1, "maximum": 14},
                    "unit": {"enum": ["celsius", "fahrenheit"]},
                    "hourly": {"type": "boolean"}
                }
            }
        }
    })
});

/// The user's words must be mapped onto the function's types: a number of
/// days written out or named as a period (a week, a fortnight, a weekend),
/// a unit named indirectly, hourly or daily from a phrase.
pub fn tool_call(rng: &mut Rng) -> Generated {
    const WORDS: [&str; 15] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen",
    ];
    let city = *rng.pick(CITIES);
    let days = rng.range(1, 14);
    let (unit_phrase, unit) = *rng.pick(&[
        ("in Fahrenheit", "fahrenheit"),
        ("in °F please", "fahrenheit"),
        ("in Celsius", "celsius"),
        ("in metric (°C)", "celsius"),
    ]);
    // The number of days is written as digits, as a word or as a period.
    let (days, days_text) = match rng.range(0, 2) {
        0 => (days, format!("a {days}-day")),
        1 => (days, format!("a {}-day", WORDS[days as usize])),
        _ => {
            let (d, text) =
                *rng.pick(&[(7, "a week's"), (14, "a fortnight's"), (2, "a weekend's")]);
            (d, text.to_owned())
        }
    };
    let (hourly_text, hourly) = *rng.pick(&[
        ("hour by hour", true),
        ("with hourly detail", true),
        ("as a daily summary", false),
        ("one line per day", false),
    ]);
    let user = match rng.range(0, 1) {
        0 => format!("What will the weather be like in {city}? I need {days_text} forecast {hourly_text}. Temperatures {unit_phrase}."),
        _ => format!("Planning a trip to {city}: {days_text} forecast {hourly_text}, {unit_phrase}."),
    };
    Generated {
        system: format!(
            "You call functions. Available function:\n{}\nReply with one JSON object {{\"name\": <function name>, \"arguments\": {{...}}}} and nothing else.",
            json!({"name": "get_forecast", "description": "Weather forecast for a city, per day or, with hourly, per hour",
                   "parameters": TOOL_CALL_SCHEMA["properties"]["arguments"]})
        ),
        user,
        reference: json!({"name": "get_forecast", "arguments": {"city": city, "days": days, "unit": unit, "hourly": hourly}}),
        schema: Some(TOOL_CALL_SCHEMA.clone()),
        extra: Map::new(),
    }
}
