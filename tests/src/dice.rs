//! A deterministic stream of numbers (splitmix64), for the synthetic fleets: the same seed
//! makes the same fleet on every machine.

pub struct Dice(pub u64);

impl Dice {
    pub fn roll(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        self.roll() % n
    }

    /// A number in 0..100.
    pub fn percent(&mut self) -> u64 {
        self.below(100)
    }
}
