package diffusion

import (
	"math"
	"testing"
)

func TestPhiloxKnownAnswers(t *testing.T) {
	// Random123 kat_vectors for philox4x32_10.
	tests := []struct {
		ctr  [4]uint32
		key  [2]uint32
		want [4]uint32
	}{
		{[4]uint32{0, 0, 0, 0}, [2]uint32{0, 0}, [4]uint32{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
		{[4]uint32{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, [2]uint32{0xffffffff, 0xffffffff},
			[4]uint32{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
		{[4]uint32{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, [2]uint32{0xa4093822, 0x299f31d0},
			[4]uint32{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
	}
	for _, tt := range tests {
		if got := Philox4x32(tt.ctr, tt.key); got != tt.want {
			t.Errorf("Philox4x32(%x, %x) = %x, want %x", tt.ctr, tt.key, got, tt.want)
		}
	}
}

func TestRNGAddressing(t *testing.T) {
	r := RNG{Seed: 0x1234_5678_9abc_def0}
	// The same address gives the same bits; any field change gives others.
	a0, a1 := r.Block(7, PurposeKeep, 3)
	if b0, b1 := r.Block(7, PurposeKeep, 3); a0 != b0 || a1 != b1 {
		t.Fatal("same address, different bits")
	}
	others := [][2]uint64{}
	for _, x := range []struct {
		r  RNG
		s  uint64
		p  Purpose
		ct uint32
	}{{RNG{Seed: r.Seed + 1}, 7, PurposeKeep, 3}, {r, 8, PurposeKeep, 3}, {r, 7 + 1<<32, PurposeKeep, 3},
		{r, 7, PurposePrompt, 3}, {r, 7, PurposeKeep, 4}, {r, 7, StepPurpose(PurposeKeep, 1), 3}} {
		w0, w1 := x.r.Block(x.s, x.p, x.ct)
		others = append(others, [2]uint64{w0, w1})
	}
	for i, o := range others {
		if o == [2]uint64{a0, a1} {
			t.Errorf("variant %d collides with the base address", i)
		}
	}
}

func TestUniformsAndIntn(t *testing.T) {
	r := RNG{Seed: 42}
	const n = 200000
	var sum, sumSq float64
	counts := make([]int, 7)
	for i := 0; i < n; i++ {
		u, v := r.Uniforms(uint64(i), PurposeLogSNR, 0)
		if !(u > 0 && u < 1 && v > 0 && v < 1) {
			t.Fatalf("uniform out of (0,1): %g %g", u, v)
		}
		sum += u
		sumSq += u * u
		w, _ := r.Block(uint64(i), PurposeKeep, 1)
		counts[Intn(w, 7)]++
	}
	mean := sum / n
	if math.Abs(mean-0.5) > 0.005 {
		t.Errorf("mean %g, want 0.5", mean)
	}
	if v := sumSq/n - mean*mean; math.Abs(v-1.0/12) > 0.002 {
		t.Errorf("variance %g, want 1/12", v)
	}
	for k, c := range counts {
		if math.Abs(float64(c)/n-1.0/7) > 0.005 {
			t.Errorf("Intn: value %d frequency %g, want 1/7", k, float64(c)/n)
		}
	}
	if Float64(0) <= 0 || Float64(math.MaxUint64) >= 1 {
		t.Errorf("Float64 reaches the interval ends: %g %g", Float64(0), Float64(math.MaxUint64))
	}
}
