//! The postbacks a worker sends: new conversions, exact repeats of ones
//! already answered `OK`, and malformed ones, over S2S GET, form POST and
//! image pixels. A valid postback is a pure function of (run, worker,
//! sequence number, method), so a repeat is rebuilt byte for byte.

use std::collections::VecDeque;
use std::fmt::Write as _;

use crate::scenario::{Methods, Mix};

/// How a postback is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    S2sGet,
    FormPost,
    Pixel,
}

impl Method {
    /// The `kind` the event must carry.
    pub fn kind(self) -> &'static str {
        match self {
            Method::S2sGet | Method::FormPost => "s2s",
            Method::Pixel => "pixel",
        }
    }
}

/// The reply a postback must get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A new conversion: `OK <id>`, and then exactly one event with this token and amount.
    Accepted {
        seq: u64,
        token: String,
        amount: String,
    },
    /// `DUPLICATE <id of the first>`, and no event.
    Duplicate { first: String },
    /// `ERROR <reason>` (status 400/403; pixels: 200 with the GIF), and no event.
    Refused { reason: &'static str, status: u16 },
}

/// One postback ready to send.
pub struct Planned {
    pub method: Method,
    pub expect: Expect,
}

/// A small deterministic PRNG (xorshift64*): the mix must not cost more than
/// the request it chooses.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) % u64::from(n)) as u32
    }
}

/// An `OK` a later repeat can copy.
struct Accepted {
    seq: u64,
    method: Method,
    event_id: String,
}

/// Malformed inputs and the reason each must get; the gateway's checks run in
/// a fixed order, so each input has exactly one right answer.
const MALFORMED: usize = 8;

/// Builds one worker's requests.
pub struct Generator {
    run_id: String,
    api_key: String,
    pixel_key: String,
    host: String,
    worker: usize,
    close: bool,
    mix: Mix,
    methods: Methods,
    rng: Rng,
    seq: u64,
    /// Recent `OK`s, the source of exact repeats.
    recent: VecDeque<Accepted>,
    /// Scratch space for the parameters, reused.
    params: String,
}

impl Generator {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        run_id: &str,
        (api_key, pixel_key): (&str, &str),
        host: &str,
        worker: usize,
        close: bool,
        mix: &Mix,
        methods: &Methods,
        seed: u64,
    ) -> Generator {
        Generator {
            run_id: run_id.to_owned(),
            api_key: api_key.to_owned(),
            pixel_key: pixel_key.to_owned(),
            host: host.to_owned(),
            worker,
            close,
            mix: mix.clone(),
            methods: methods.clone(),
            rng: Rng::new(seed ^ (worker as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            seq: 0,
            recent: VecDeque::with_capacity(256),
            params: String::with_capacity(256),
        }
    }

    /// Writes the next request into `out` (cleared first) and says what it must get.
    pub fn next(&mut self, out: &mut Vec<u8>) -> Planned {
        out.clear();
        let roll = self.rng.below(100);
        let method = self.method();
        if roll >= self.mix.valid && roll < self.mix.valid + self.mix.repeat {
            if let Some(i) = self.pick_recent() {
                let (seq, method) = (self.recent[i].seq, self.recent[i].method);
                let first = self.recent[i].event_id.clone();
                self.valid(seq, method, out);
                return Planned {
                    method,
                    expect: Expect::Duplicate { first },
                };
            }
        }
        self.seq += 1;
        let seq = self.seq;
        if roll >= self.mix.valid + self.mix.repeat {
            let (reason, status) = self.malformed(seq, method, out);
            let status = if method == Method::Pixel { 200 } else { status };
            return Planned {
                method,
                expect: Expect::Refused { reason, status },
            };
        }
        let (token, amount) = self.valid(seq, method, out);
        Planned {
            method,
            expect: Expect::Accepted { seq, token, amount },
        }
    }

    /// Remembers an `OK`, so a later repeat can copy it.
    pub fn accepted(&mut self, seq: u64, method: Method, event_id: &str) {
        if self.recent.len() == self.recent.capacity() {
            self.recent.pop_front();
        }
        self.recent.push_back(Accepted {
            seq,
            method,
            event_id: event_id.to_owned(),
        });
    }

    fn pick_recent(&mut self) -> Option<usize> {
        let n = self.recent.len();
        (n > 0).then(|| self.rng.below(n as u32) as usize)
    }

    fn method(&mut self) -> Method {
        let r = self.rng.below(100);
        if r < self.methods.s2s_get {
            Method::S2sGet
        } else if r < self.methods.s2s_get + self.methods.form_post {
            Method::FormPost
        } else {
            Method::Pixel
        }
    }

    /// The token of valid postback `seq`: letters, digits and dashes, and every
    /// tenth one with the characters senders really use (`+`, `/`, `=`, `|`,
    /// non-ASCII letters), which must come back byte for byte.
    pub fn token(&self, seq: u64) -> String {
        let mut t = format!("{}-{}-{}", self.run_id, self.worker, seq);
        if seq % 10 == 7 {
            t.push_str("~AbC+dE/f==|пример");
        }
        t
    }

    fn valid(&mut self, seq: u64, method: Method, out: &mut Vec<u8>) -> (String, String) {
        let token = self.token(seq);
        let amount = format!("{}.{:02}", seq % 5000, (seq * 7) % 100);
        let mut p = std::mem::take(&mut self.params);
        p.clear();
        let key = if method == Method::Pixel {
            &self.pixel_key
        } else {
            &self.api_key
        };
        let _ = write!(p, "api_key={key}&tracking=");
        encode_into(&mut p, &token);
        let _ = write!(p, "&amount={amount}");
        if seq.is_multiple_of(3) {
            let _ = write!(p, "&txid=tx{seq}");
        }
        if seq % 4 == 1 {
            p.push_str("&currency=usd");
        }
        let _ = write!(p, "&sub1=w{}", self.worker);
        if method == Method::Pixel {
            let _ = write!(p, "&_={}", 1_700_000_000_000u64 + seq);
        }
        self.request(method, &p, out);
        self.params = p;
        (token, amount)
    }

    fn malformed(&mut self, seq: u64, method: Method, out: &mut Vec<u8>) -> (&'static str, u16) {
        let mut tok = String::new();
        encode_into(
            &mut tok,
            &format!("{}-{}-{}-bad", self.run_id, self.worker, seq),
        );
        let key = if method == Method::Pixel {
            &self.pixel_key
        } else {
            &self.api_key
        };
        let (p, reason, status) = match (seq as usize) % MALFORMED {
            0 => (
                format!("api_key={key}&tracking={tok}&amount=12,34"),
                "bad_amount",
                400,
            ),
            1 => (
                format!("api_key={key}&tracking=%7Bclickid%7D&amount=1.00"),
                "unfilled_macro",
                400,
            ),
            2 => (
                format!("api_key={key}&tracking={tok}%ZZ&amount=1.00"),
                "bad_encoding",
                400,
            ),
            3 => (
                format!("api_key={key}&tracking={tok}&tracking={tok}x&amount=1.00"),
                "duplicate_param",
                400,
            ),
            // `&currency=` mangled into `¤cy=` by an HTML entity.
            4 => (
                format!("api_key={key}&tracking={tok}&amount=10%C2%A4cy=EUR"),
                "bad_amount",
                400,
            ),
            5 => (
                format!("api_key={key}&tracking={tok}"),
                "missing_amount",
                400,
            ),
            6 => (
                format!("api_key=wrong-{key}&tracking={tok}&amount=1.00"),
                "bad_api_key",
                403,
            ),
            _ => (
                format!("api_key={key}&tracking={tok}&amount=1e3"),
                "bad_amount",
                400,
            ),
        };
        self.request(method, &p, out);
        (reason, status)
    }

    fn request(&self, method: Method, params: &str, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let close = if self.close {
            "Connection: close\r\n"
        } else {
            ""
        };
        let host = &self.host;
        let _ = match method {
            Method::S2sGet => write!(
                out,
                "GET /postback?{params} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: postback-load\r\n{close}\r\n"
            ),
            Method::FormPost => write!(
                out,
                "POST /postback HTTP/1.1\r\nHost: {host}\r\nUser-Agent: postback-load\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n{close}\r\n{params}",
                params.len()
            ),
            Method::Pixel => write!(
                out,
                "GET /pixel.gif?{params} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) postback-load\r\nAccept: image/avif,image/webp,*/*\r\n{close}\r\n"
            ),
        };
    }
}

/// Percent-encodes every byte outside the unreserved set, as a careful sender
/// does; so `+` reaches the gateway as `%2B` in queries and form bodies alike.
pub fn encode_into(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator(mix: Mix) -> Generator {
        let methods = Methods {
            s2s_get: 40,
            form_post: 30,
            pixel: 30,
        };
        Generator::new("lt1", ("k", "pk"), "h", 3, false, &mix, &methods, 42)
    }

    #[test]
    fn follows_the_mix_and_repeats_only_what_was_accepted() {
        let mut g = generator(Mix {
            valid: 90,
            repeat: 5,
            malformed: 5,
        });
        let mut buf = Vec::new();
        let (mut ok, mut dup, mut bad) = (0, 0, 0);
        for _ in 0..10_000 {
            let p = g.next(&mut buf);
            match p.expect {
                Expect::Accepted { seq, .. } => {
                    ok += 1;
                    g.accepted(seq, p.method, "id");
                }
                Expect::Duplicate { first } => {
                    assert_eq!(first, "id");
                    dup += 1
                }
                Expect::Refused { .. } => bad += 1,
            }
        }
        assert!((8800..9200).contains(&ok), "{ok}");
        assert!((400..600).contains(&dup), "{dup}");
        assert!((400..600).contains(&bad), "{bad}");
    }

    #[test]
    fn a_repeat_is_the_same_bytes() {
        let mut g = generator(Mix {
            valid: 50,
            repeat: 50,
            malformed: 0,
        });
        let mut first = Vec::new();
        let p = g.next(&mut first);
        let Expect::Accepted { seq, token, .. } = p.expect else {
            panic!("the first one cannot be a repeat")
        };
        assert_eq!(token, "lt1-3-1");
        g.accepted(seq, p.method, "id");
        let mut again = Vec::new();
        loop {
            if let Expect::Duplicate { .. } = g.next(&mut again).expect {
                break;
            }
        }
        assert_eq!(first, again);
    }

    #[test]
    fn special_tokens_are_percent_encoded() {
        let mut s = String::new();
        encode_into(&mut s, "a+b/=|п");
        assert_eq!(s, "a%2Bb%2F%3D%7C%D0%BF");
        let g = generator(Mix {
            valid: 100,
            repeat: 0,
            malformed: 0,
        });
        assert!(g.token(17).ends_with("~AbC+dE/f==|пример"));
    }
}
