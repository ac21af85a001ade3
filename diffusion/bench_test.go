package diffusion

import "testing"

// BenchmarkPrepare measures batch preparation per token (8 × 512 tokens,
// balanced noise, the as-run settings).
func BenchmarkPrepare(b *testing.B) {
	const B, N, V = 8, 512, 32768
	c := testConfig(0, V)
	clean := cleanTokens(B, N, V)
	idx := indices(0, B)
	var batch Batch
	b.SetBytes(B * N)
	for i := 0; b.Loop(); i++ {
		if err := c.Prepare(RNG{Seed: 1}, idx, clean, N, 1, &batch); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPhilox is the cost of one 128-bit block.
func BenchmarkPhilox(b *testing.B) {
	r := RNG{Seed: 1}
	var s uint64
	for i := 0; b.Loop(); i++ {
		w, _ := r.Block(uint64(i), PurposeKeep, 0)
		s += w
	}
	_ = s
}
