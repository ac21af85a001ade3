package diffusion

import "math/bits"

// Purpose names an independent random stream of one sample. Purposes below
// 256 are per-sample streams; sampler streams add the step number shifted by
// 8 bits (see StepPurpose), so a step's draws never collide with another's.
type Purpose uint32

// Random streams. The numbers are part of the run's reproducibility contract:
// changing one changes every run's noise.
const (
	PurposeLogSNR   Purpose = 1 // per-token t ~ U(t_min, t_max); counter = position
	PurposeSeqNoise Purpose = 2 // per-sequence r for independent/linear SNR; counter 0
	PurposeKeep     Purpose = 3 // z ~ q_λ: keep and isUniform (counter 2·position), the uniform token (2·position+1)
	// 4 is retired; do not reuse it.
	PurposePrompt Purpose = 5 // has_prompt and prompt fraction; counter 0
	PurposeInfill Purpose = 6 // has_infill and fraction (counter 0), per-token draws (counter = position+1)
	PurposeEmpty  Purpose = 7 // empty fraction (counter 0), permutation keys (counter = position+1)
	PurposePrior  Purpose = 8 // generation prior; counter = position
	PurposeEval   Purpose = 9 // likelihood evaluation: StepPurpose(PurposeEval, grid index), counters as PurposeKeep

	PurposeSampler Purpose = 10 // sampler steps: StepPurpose(PurposeSampler, step); counter = position
)

// StepPurpose returns the stream of step `step` of a multi-step procedure
// (sampling, likelihood evaluation): base in the low 8 bits, step above.
func StepPurpose(base Purpose, step int) Purpose {
	return base&0xff | Purpose(uint32(step)<<8)
}

// Philox4x32 is the Philox4x32-10 block function of Salmon et al. (2011,
// "Parallel random numbers: as easy as 1, 2, 3"): it maps a 128-bit counter
// and a 64-bit key to 128 pseudo-random bits. It matches Random123's
// known-answer vectors.
func Philox4x32(ctr [4]uint32, key [2]uint32) [4]uint32 {
	const (
		m0, m1 = 0xD2511F53, 0xCD9E8D57
		w0, w1 = 0x9E3779B9, 0xBB67AE85
	)
	c0, c1, c2, c3 := ctr[0], ctr[1], ctr[2], ctr[3]
	k0, k1 := key[0], key[1]
	for r := 0; r < 10; r++ {
		if r > 0 {
			k0 += w0
			k1 += w1
		}
		hi0, lo0 := bits.Mul32(m0, c0)
		hi1, lo1 := bits.Mul32(m1, c2)
		c0, c1, c2, c3 = hi1^c1^k0, lo1, hi0^c3^k1, lo0
	}
	return [4]uint32{c0, c1, c2, c3}
}

// RNG addresses the random bits of one run. A draw is located by
// (sample, purpose, counter): Philox4x32-10 keyed with the 64-bit run seed,
// with counter words (sample low, sample high, purpose, counter). Each
// address yields 128 bits, used as two 64-bit words. RNG is a value; it has
// no state and is safe for concurrent use.
type RNG struct{ Seed uint64 }

// Block returns the two 64-bit words at an address.
func (r RNG) Block(sample uint64, p Purpose, counter uint32) (uint64, uint64) {
	o := Philox4x32([4]uint32{uint32(sample), uint32(sample >> 32), uint32(p), counter},
		[2]uint32{uint32(r.Seed), uint32(r.Seed >> 32)})
	return uint64(o[0])<<32 | uint64(o[1]), uint64(o[2])<<32 | uint64(o[3])
}

// Uniforms returns two independent U(0,1) draws (52 bits each) at an address.
func (r RNG) Uniforms(sample uint64, p Purpose, counter uint32) (float64, float64) {
	a, b := r.Block(sample, p, counter)
	return Float64(a), Float64(b)
}

// Float64 maps 64 random bits to the open interval (0,1): (k + ½)/2^52 for
// the top 52 bits k, exactly representable. It is never 0 or 1, so u < p is
// never true for p = 0 and always true for p = 1.
func Float64(w uint64) float64 { return (float64(w>>12) + 0.5) * (1.0 / (1 << 52)) }

// Intn maps 64 random bits to [0, n) by multiply-shift (Lemire). The bias is
// below n/2^64, far below anything measurable for vocabulary-sized n.
func Intn(w uint64, n int) int {
	hi, _ := bits.Mul64(w, uint64(n))
	return int(hi)
}
