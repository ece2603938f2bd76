//! The corruption harness the filesystem readers' tests share: a small deterministic PRNG, a
//! time bound, and rounds of flipped bytes read back under `catch_unwind`.

use std::sync::mpsc;
use std::time::Duration;

/// `rounds` copies of `pristine`, each with `flips` bytes flipped at places a fixed seed picks
/// (so a failing copy can be made again).
pub fn flipped_copies(pristine: &[u8], rounds: usize, flips: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
    (0..rounds).map(move |_| {
        let mut copy = pristine.to_vec();
        for _ in 0..flips {
            let at = (rng.next() % copy.len() as u64) as usize;
            copy[at] ^= (rng.next() % 255 + 1) as u8;
        }
        copy
    })
}

/// xorshift64: deterministic, so a failing round can be replayed.
pub struct Xorshift(pub u64);

impl Xorshift {
    #[allow(clippy::should_implement_trait)] // not an Iterator: it never ends
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Runs `work` on a thread, failing if it takes longer than `limit`.
pub fn bounded<T: Send + 'static>(limit: Duration, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx.recv_timeout(limit).unwrap_or_else(|e| panic!("did not finish within {limit:?}: {e}"))
}

/// Corrupts `pristine` `rounds` times at positions drawn by `pick` (each round restored before
/// the next), calls `read` on it each time (true: read, false: refused) and counts
/// (panics, read, refused), all within ten minutes.
pub fn corrupt_rounds(
    pristine: Vec<u8>,
    rounds: usize,
    pick: impl Fn(&mut Xorshift) -> Vec<usize> + Send + 'static,
    read: impl Fn(&Vec<u8>) -> bool + Send + 'static,
) -> (usize, usize, usize) {
    bounded(Duration::from_secs(600), move || {
        let mut image = pristine.clone();
        let mut rng = Xorshift(0x1234_5678_9ABC_DEF1);
        let (mut panics, mut ok, mut err) = (0, 0, 0);
        for _ in 0..rounds {
            let positions = pick(&mut rng);
            let saved: Vec<u8> = positions.iter().map(|&p| image[p]).collect();
            for &p in &positions {
                image[p] ^= (rng.next() % 255 + 1) as u8;
            }
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&image))) {
                Err(_) => panics += 1,
                Ok(true) => ok += 1,
                Ok(false) => err += 1,
            }
            // Restore in reverse, in case a position was hit twice.
            for (&p, &b) in positions.iter().zip(&saved).rev() {
                image[p] = b;
            }
        }
        assert!(image == pristine);
        (panics, ok, err)
    })
}

/// Positions to flip in a round.
pub type Pick = Box<dyn Fn(&mut Xorshift) -> Vec<usize> + Send>;

/// Runs `rounds` of damage drawn by `pick` over `pristine` (see [`corrupt_rounds`]) and asserts
/// what a careful reader of checksummed metadata must do: never panic; either read exactly
/// what `read` gives of the pristine image (`expected`), or refuse with an error whose message
/// starts with `prefix` (the reader's name); and refuse some. `name` titles the output.
pub fn assert_read_as_pristine_or_refused(
    name: &str,
    pristine: &[u8],
    (rounds, pick): (usize, Pick),
    read: fn(&Vec<u8>) -> Result<String, String>,
    expected: &str,
    prefix: &str,
) {
    let outcomes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = outcomes.clone();
    let expected = expected.to_string();
    let (panics, ok, refused) = corrupt_rounds(pristine.to_vec(), rounds, pick, move |image| {
        let outcome = read(image);
        let read = outcome.is_ok();
        seen.lock().expect("outcomes").push(outcome.map(|l| l == expected));
        read
    });
    println!("{name}: {ok} read, {refused} refused, {panics} panics");
    assert_eq!(panics, 0, "{name}");
    let outcomes = outcomes.lock().expect("outcomes");
    let changed = outcomes.iter().filter(|o| matches!(o, Ok(false))).count();
    assert_eq!(changed, 0, "{name}: rounds read with a listing other than the pristine one");
    let unnamed: Vec<&String> =
        outcomes.iter().filter_map(|o| o.as_ref().err()).filter(|m| !m.starts_with(prefix)).collect();
    assert!(unnamed.is_empty(), "{name}: errors that do not start {prefix:?}: {:?}", &unnamed[..unnamed.len().min(5)]);
    assert!(refused > 0, "{name}: some damage is refused");
}
