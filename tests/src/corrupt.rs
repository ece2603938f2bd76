//! The corruption harness the filesystem readers' tests share: a small deterministic PRNG, a
//! time bound, and rounds of flipped bytes read back under `catch_unwind`.

use std::sync::mpsc;
use std::time::Duration;

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
