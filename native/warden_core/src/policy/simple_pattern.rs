//! Policy patterns that are a sequence of character classes, each once or
//! repeated (`[a-z][a-z0-9_.-]*`, `[A-Za-z0-9].*`, `dev-[0-9]{4,8}`),
//! matched without the regex engine.
//!
//! Why: the client id and username patterns run in every connect, with the
//! CPU caches emptied by the broker's own work. A full DFA of such a
//! pattern still reads its header, its byte classes and a row per state,
//! about 11 cache lines a pattern, and the DFA search's code about 8 more
//! (docs/BENCHMARKS.md, "Cache lines per hook"). Here a pattern is a few
//! 16-byte class bitmaps read in order.
//!
//! Only what this matcher answers exactly like the regex (`regex::bytes`,
//! Unicode on, anchored at both ends) is taken: classes whose ASCII part is
//! any set and whose non-ASCII part is nothing or every character (`.`,
//! `[^a-z]`); literals of ASCII bytes; repetitions of one of those. Anything
//! else (alternations, groups of more than one item, look-arounds,
//! case-insensitive classes with non-ASCII folds, byte classes of `(?-u)`)
//! stays with the regex. A Unicode class only matches the UTF-8 encoding of
//! a character, so a value that is not valid UTF-8 matches no pattern here,
//! as in the regex.

use regex_syntax::hir::{Class, Hir, HirKind, Look};

/// Most positions a pattern may expand to: the state set is one `u64`.
const MAX_POSITIONS: usize = 63;

/// One character of the value, as a position accepts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CharClass {
    /// Bit `b` set: the ASCII byte `b` is in the class.
    ascii: u128,
    /// Every non-ASCII character is in the class.
    non_ascii: bool,
}

/// How often a position's class is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Times {
    Once,
    /// Once or not at all.
    Optional,
    /// Any number of times, none too.
    Any,
}

/// A pattern of this shape, expanded to positions (`x{2,4}` is `x x x? x?`,
/// `x+` is `x x*`), matched as a set of states in one word: state i is
/// "the first i positions are done".
#[derive(Clone, Debug)]
pub struct SimplePattern {
    /// Position i's ASCII characters (bit `b`: byte `b`), in one array read
    /// in order.
    ascii: Box<[u128]>,
    /// Bit i: position i takes every non-ASCII character.
    non_ascii: u64,
    /// Bit i: position i may be passed over (`Optional`, `Any`).
    skippable: u64,
    /// Bit i: position i may take more characters (`Any`).
    repeats: u64,
    /// The states before the first character.
    start: u64,
    /// The states inside the last repetition when every position after it
    /// may be passed over (`[a-z][a-z0-9_.-]*` after its first character),
    /// and that repetition's ASCII class: from there each character of the
    /// class leaves the states as they are, so the matcher only tests the
    /// class (0: no such repetition).
    tail_states: u64,
    tail_class: u128,
}

impl SimplePattern {
    /// `Some` when `src` (the anchored source the policy's regex was built
    /// from, `^(?:...)$`) has this shape; parsed with the regex's settings.
    pub fn of(src: &str, nest_limit: u32) -> Option<SimplePattern> {
        let hir = regex_syntax::ParserBuilder::new().utf8(false).nest_limit(nest_limit).build().parse(src).ok()?;
        let items = match hir.kind() {
            HirKind::Concat(items) => items.as_slice(),
            _ => return None,
        };
        let [first, inner @ .., last] = items else { return None };
        if first.kind() != &HirKind::Look(Look::Start) || last.kind() != &HirKind::Look(Look::End) {
            return None;
        }
        let mut positions = Vec::new();
        for item in inner {
            push_item(item, &mut positions)?;
            if positions.len() > MAX_POSITIONS {
                return None;
            }
        }
        let bits = |f: &dyn Fn(&(CharClass, Times)) -> bool| {
            positions.iter().enumerate().filter(|(_, p)| f(p)).fold(0u64, |m, (i, _)| m | 1 << i)
        };
        let mut p = SimplePattern {
            ascii: positions.iter().map(|(class, _)| class.ascii).collect(),
            non_ascii: bits(&|p| p.0.non_ascii),
            skippable: bits(&|p| p.1 != Times::Once),
            repeats: bits(&|p| p.1 == Times::Any),
            start: 0,
            tail_states: 0,
            tail_class: 0,
        };
        p.start = p.closure(1);
        // From inside the last repetition, every later position passed over.
        if let Some(k) = positions.iter().rposition(|(_, t)| *t == Times::Any) {
            let inside = p.closure(1 << k);
            if p.is_done(inside) {
                p.tail_states = inside;
                p.tail_class = positions[k].0.ascii;
            }
        }
        Some(p)
    }

    /// Whether the whole of `value` matches. The caller bounds its length.
    pub fn matches(&self, value: &[u8]) -> bool {
        let mut states = self.start;
        for (at, &b) in value.iter().enumerate() {
            if b >= 0x80 {
                return self.matches_chars(states, &value[at..]);
            }
            if states == self.tail_states && self.tail_class >> b & 1 == 1 {
                continue;
            }
            let accepting = self.accepting_ascii(b);
            states = self.step(states, accepting);
            if states == 0 {
                return false;
            }
        }
        self.is_done(states)
    }

    /// The rest of a value from its first non-ASCII byte: a class matches
    /// only a character's UTF-8 encoding, so it must be valid UTF-8.
    fn matches_chars(&self, mut states: u64, rest: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(rest) else { return false };
        for c in text.chars() {
            let accepting = match u8::try_from(c) {
                Ok(b) if b < 0x80 => self.accepting_ascii(b),
                _ => self.non_ascii,
            };
            states = self.step(states, accepting);
            if states == 0 {
                return false;
            }
        }
        self.is_done(states)
    }

    /// The positions whose class takes the ASCII byte `b`.
    fn accepting_ascii(&self, b: u8) -> u64 {
        self.ascii.iter().enumerate().fold(0u64, |m, (i, class)| m | ((class >> b & 1) as u64) << i)
    }

    fn is_done(&self, states: u64) -> bool {
        states >> self.ascii.len() & 1 == 1
    }

    /// One character, taken by the positions in `accepting`: each state
    /// whose next position takes it moves past that position, or stays on
    /// it when the position repeats.
    fn step(&self, states: u64, accepting: u64) -> u64 {
        let took = states & accepting;
        self.closure(took << 1 | took & self.repeats)
    }

    /// The states reached by passing over skippable positions.
    fn closure(&self, mut states: u64) -> u64 {
        loop {
            let more = states | (states & self.skippable) << 1;
            if more == states {
                return states;
            }
            states = more;
        }
    }
}

/// Appends the positions of one item of the pattern's sequence, or `None`
/// when it is not of this shape.
fn push_item(item: &Hir, out: &mut Vec<(CharClass, Times)>) -> Option<()> {
    match item.kind() {
        HirKind::Empty => Some(()),
        HirKind::Literal(lit) => {
            for &b in lit.0.iter() {
                out.push((ascii_byte(b)?, Times::Once));
            }
            Some(())
        }
        HirKind::Class(class) => {
            out.push((char_class(class)?, Times::Once));
            Some(())
        }
        HirKind::Repetition(rep) => {
            let class = single_class(&rep.sub)?;
            let min = usize::try_from(rep.min).ok()?;
            let optional = match rep.max {
                Some(max) => usize::try_from(max.checked_sub(rep.min)?).ok()?,
                None => 0,
            };
            if min + optional > MAX_POSITIONS {
                return None;
            }
            out.extend(std::iter::repeat_n((class, Times::Once), min));
            out.extend(std::iter::repeat_n((class, Times::Optional), optional));
            if rep.max.is_none() {
                out.push((class, Times::Any));
            }
            Some(())
        }
        _ => None,
    }
}

/// What a repetition repeats: one class, or one ASCII character.
fn single_class(hir: &Hir) -> Option<CharClass> {
    match hir.kind() {
        HirKind::Class(class) => char_class(class),
        HirKind::Literal(lit) => match *lit.0 {
            [b] => ascii_byte(b),
            _ => None,
        },
        _ => None,
    }
}

fn ascii_byte(b: u8) -> Option<CharClass> {
    (b < 0x80).then(|| CharClass { ascii: 1 << b, non_ascii: false })
}

/// A Unicode class whose non-ASCII part is empty or every character.
fn char_class(class: &Class) -> Option<CharClass> {
    let Class::Unicode(class) = class else { return None };
    let mut ascii = 0u128;
    // The non-ASCII characters covered, counted: all of them or none.
    let mut non_ascii: u64 = 0;
    for r in class.iter() {
        let (lo, hi) = (u32::from(r.start()), u32::from(r.end()));
        for b in lo..=hi.min(0x7F) {
            ascii |= 1 << b;
        }
        if hi >= 0x80 {
            // A range may span the surrogates numerically; they are not characters.
            let lo = lo.max(0x80);
            let surrogates = (hi.min(0xDFFF) + 1).saturating_sub(lo.max(0xD800));
            non_ascii += u64::from(hi - lo + 1 - surrogates);
        }
    }
    // U+0080..=U+10FFFF without the 2,048 surrogates, which are not characters.
    const ALL_NON_ASCII: u64 = 0x10_FFFF - 0x80 + 1 - 2048;
    match non_ascii {
        0 => Some(CharClass { ascii, non_ascii: false }),
        ALL_NON_ASCII => Some(CharClass { ascii, non_ascii: true }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::bytes::RegexBuilder;

    fn anchored(src: &str) -> String {
        format!("^(?:{src})$")
    }

    fn simple(src: &str) -> Option<SimplePattern> {
        SimplePattern::of(&anchored(src), 32)
    }

    #[test]
    fn the_policy_patterns_people_write_take_this_path() {
        for src in [
            "[A-Za-z0-9].*",
            "[a-z][a-z0-9_.-]*",
            "dev-[0-9]{4,8}",
            "[0-9a-f]{12}",
            "sensor/[^/]+",
            "",
            "plant-.+",
        ] {
            assert!(simple(src).is_some(), "{src}");
        }
        for src in ["ab|c", "(ab)+", r"\d+", r"\w", r"\bx", "(?-u:[\\x80-\\xff])", "(?i)k", "é", "[α-ω]+", "x{0,100}"] {
            assert!(simple(src).is_none(), "{src}");
        }
    }

    /// Against the regex the policy builds, on random patterns of the
    /// accepted shapes (and others, which must be refused or agree) and
    /// random values, non-ASCII, invalid UTF-8 and newlines included.
    #[test]
    fn answers_like_the_regex_engine() {
        let atoms = ["a", "b", "-", ".", "[ab]", "[^a]", "[a-c0-9]", r"\d", r"\w", "[^/]", r"\n", "é", "[^\\n]", "(?i)a"];
        let reps = ["", "", "*", "+", "?", "{2}", "{1,3}", "{0,2}", "{2,}", "*?"];
        let pieces: [&[u8]; 12] = [b"a", b"b", b"c", b"-", b"0", b"/", b"\n", "é".as_bytes(), "λ".as_bytes(), b"\xff", b"\xc3", b"A"];
        let mut rnd = crate::testing::below(0x9E37_79B9_7F4A_7C15);
        let mut pick = |n: usize| rnd(n as u64) as usize;
        let (mut checked, mut taken) = (0, 0);
        for _ in 0..3000 {
            let src: String = (0..pick(4)).map(|_| format!("{}{}", atoms[pick(atoms.len())], reps[pick(reps.len())])).collect();
            let re = RegexBuilder::new(&anchored(&src)).build().unwrap();
            let Some(sp) = simple(&src) else { continue };
            taken += 1;
            for _ in 0..40 {
                let value: Vec<u8> = (0..pick(6)).flat_map(|_| pieces[pick(pieces.len())].to_vec()).collect();
                assert_eq!(sp.matches(&value), re.is_match(&value), "{src:?} on {:?}", String::from_utf8_lossy(&value));
                checked += 1;
            }
        }
        assert!(taken > 1000 && checked > 40_000, "{taken} patterns, {checked} values");
    }
}
