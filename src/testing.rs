//! Helpers shared by the unit tests.

/// Every word of at most `max_len` bytes over `alphabet`, shortest first,
/// the empty word included: the inputs of an exhaustive test.
pub(crate) fn words(alphabet: &[u8], max_len: usize) -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = vec![Vec::new()];
    let mut last = 0..1;
    for _ in 0..max_len {
        let longer: Vec<Vec<u8>> = all[last.clone()]
            .iter()
            .flat_map(|w| {
                alphabet.iter().map(move |&b| {
                    let mut w = w.clone();
                    w.push(b);
                    w
                })
            })
            .collect();
        last = all.len()..all.len() + longer.len();
        all.extend(longer);
    }
    all
}
