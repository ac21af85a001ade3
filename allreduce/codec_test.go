package allreduce

import (
	"fmt"
	"math"
	"testing"
)

// TestCodecRoundTrip checks, per codec, that decode(encode(x)) equals the
// reconstruction encode reports (what the owner of a segment keeps), that
// accumulate adds exactly that, and the per-element error bound.
func TestCodecRoundTrip(t *testing.T) {
	x := inputs(1, 3000, 11)[0]
	x[5], x[700] = 0, float32(math.Copysign(0, -1))
	for _, name := range Codecs {
		for _, n := range []int{0, 1, 255, 256, 257, 3000} {
			t.Run(fmt.Sprintf("%s/%d", name, n), func(t *testing.T) {
				info, _ := codecByName(name)
				c, err := info.make()
				if err != nil {
					t.Fatal(err)
				}
				src := x[:n]
				out := make([]float32, n)
				copy(out, src)
				p := c.encode(nil, out, nil, nil, true)
				if err := info.check(n, len(p)); err != nil {
					t.Fatalf("check refuses own payload: %v", err)
				}
				if len(p) > info.maxSize(n) {
					t.Errorf("payload %d bytes > maxSize %d", len(p), info.maxSize(n))
				}
				dec := make([]float32, n)
				if err := c.decode(dec, p); err != nil {
					t.Fatal(err)
				}
				acc := make([]float32, n)
				for i := range acc {
					acc[i] = 1
				}
				if err := c.accumulate(acc, p, nil); err != nil {
					t.Fatal(err)
				}
				for i := range n {
					if math.Float32bits(dec[i]) != math.Float32bits(out[i]) {
						t.Fatalf("element %d: decoded %v, encode reported %v", i, dec[i], out[i])
					}
					if acc[i] != 1+dec[i] {
						t.Fatalf("element %d: accumulated %v, want 1+%v", i, acc[i], dec[i])
					}
					lim := bound(name, 1, []float64{math.Abs(float64(src[i]))})[0]
					if name == CodecInt8 {
						m := 0.0
						for _, v := range src[i/Int8Block*Int8Block : min(n, i/Int8Block*Int8Block+Int8Block)] {
							m = max(m, math.Abs(float64(v)))
						}
						lim = m / 254 * (1 + 1e-6)
					}
					if d := math.Abs(float64(dec[i] - src[i])); d > lim {
						t.Fatalf("element %d: %v became %v (error %g > %g)", i, src[i], dec[i], d, lim)
					}
				}
			})
		}
	}
}

func TestBF16Rounding(t *testing.T) {
	cases := []struct {
		in   uint32
		want uint16
	}{
		{0x3f800000, 0x3f80}, // 1
		{0x3f808000, 0x3f80}, // tie, even stays
		{0x3f818000, 0x3f82}, // tie, odd rounds up
		{0x3f808001, 0x3f81}, // above tie
		{0x7f7fffff, 0x7f80}, // max float rounds to +Inf
		{0x7f800000, 0x7f80}, // +Inf
		{0xff800000, 0xff80}, // -Inf
		{0x7fc00001, 0x7fc0}, // NaN stays NaN
		{0x7f800001, 0x7fc0}, // signalling NaN becomes quiet, not Inf
	}
	for _, c := range cases {
		if got := toBF16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("toBF16(%08x) = %04x, want %04x", c.in, got, c.want)
		}
	}
}

func TestInt8NonFinite(t *testing.T) {
	x := []float32{1, float32(math.NaN()), 2}
	y := []float32{1, float32(math.Inf(1)), 2}
	var c int8Codec
	for _, src := range [][]float32{x, y} {
		dec := make([]float32, 3)
		if err := c.decode(dec, c.encode(nil, src, nil, nil, false)); err != nil {
			t.Fatal(err)
		}
		for i, v := range dec {
			if !math.IsNaN(float64(v)) {
				t.Errorf("element %d of a block holding %v decoded to %v, want NaN", i, src, v)
			}
		}
	}
}

// BenchmarkCodec times each codec's passes over one 1 MiB chunk as the ring
// makes them: encode of a partial sum (with error feedback where the codec
// keeps a residual, as at a reduce-scatter hop), encode with rounding (the
// owner of a segment), accumulate (a reduce-scatter receive) and decode (an
// all-gather receive). Compare each to none in the same run.
func BenchmarkCodec(b *testing.B) {
	const n = 1 << 18 // one 1 MiB chunk of fp32
	// gradient-like: roughly normal values of one layer's scale
	x := inputs(3, n, 3)
	for i := range x[0] {
		x[0][i] = (x[0][i] + x[1][i] + x[2][i]) * 1e-3
	}
	for _, name := range Codecs {
		info, _ := codecByName(name)
		c, _ := info.make()
		var res []float32
		if info.feedback {
			res = make([]float32, n)
		}
		src := append([]float32(nil), x[0]...)
		buf := make([]byte, 0, info.maxSize(n)+64)
		p := c.encode(nil, x[0], nil, nil, false)
		b.Run(name+"/encode", func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				c.encode(buf[:0], x[0], nil, res, false)
			}
			b.ReportMetric(float64(len(p))/(4*n), "ratio")
		})
		b.Run(name+"/encode-round", func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				c.encode(buf[:0], src, nil, res, true)
			}
		})
		dst := make([]float32, n)
		b.Run(name+"/accumulate", func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				c.accumulate(dst, p, nil)
			}
		})
		b.Run(name+"/decode", func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				c.decode(dst, p)
			}
		})
	}
}

// TestCodecFeedback checks the fused passes: encode of src+add stores in res
// exactly what decoding loses and, with round, leaves in src what receivers
// decode; accumulate with add adds both.
func TestCodecFeedback(t *testing.T) {
	xs := inputs(2, 1000, 5)
	for _, name := range Codecs {
		for _, n := range []int{0, 1, 256, 700} {
			t.Run(fmt.Sprintf("%s/%d", name, n), func(t *testing.T) {
				info, _ := codecByName(name)
				c, err := info.make()
				if err != nil {
					t.Fatal(err)
				}
				src := append([]float32(nil), xs[0][:n]...)
				add := xs[1][:n]
				res := make([]float32, n)
				p := c.encode(nil, src, add, res, true)
				dec := make([]float32, n)
				if err := c.decode(dec, p); err != nil {
					t.Fatal(err)
				}
				acc := make([]float32, n)
				for i := range acc {
					acc[i] = 2
				}
				if err := c.accumulate(acc, p, add); err != nil {
					t.Fatal(err)
				}
				for i := range n {
					y := xs[0][i] + add[i]
					if res[i] != y-dec[i] {
						t.Fatalf("element %d: residual %v, want %v−%v", i, res[i], y, dec[i])
					}
					if math.Float32bits(src[i]) != math.Float32bits(dec[i]) {
						t.Fatalf("element %d: rounded to %v, receivers decode %v", i, src[i], dec[i])
					}
					if acc[i] != 2+add[i]+dec[i] {
						t.Fatalf("element %d: accumulated %v, want 2+%v+%v", i, acc[i], add[i], dec[i])
					}
				}
			})
		}
	}
}
