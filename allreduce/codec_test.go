package allreduce

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
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

// TestInt8KernelsAgree: the vector kernels (where the machine has them)
// give bit for bit what the scalar loops give, for every variant of what
// they write, on values that include ties, zeros, signed zeros, a block's
// extremes and non-finite values.
func TestInt8KernelsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	for _, n := range []int{0, 1, 31, 32, 33, 64, 200, 256} {
		for trial := range 4 {
			v := make([]float32, n)
			for i := range v {
				v[i] = float32(rng.NormFloat64())
				switch rng.IntN(8) {
				case 0:
					v[i] = float32(rng.IntN(255)-127) / 2 // ties at x·inv = k + ½ when inv is 2
				case 1:
					v[i] = float32(math.Copysign(0, -1))
				}
			}
			if trial == 3 && n > 0 {
				v[rng.IntN(n)] = float32(math.Inf(-1))
			}
			if got, want := absMax(v), absMaxGo(v); got != want {
				t.Fatalf("n %d: absMax %08x, scalar %08x", n, got, want)
			}
			// As int8Block sets them: |v·inv| stays within 127 (and with
			// an infinity in the block, inv is 0).
			inv, scale := float32(2), float32(0.5)
			if trial >= 2 {
				m := math.Float32frombits(absMaxGo(v))
				inv, scale = 127/m, m/127
				if math.IsInf(float64(m), 0) {
					inv, scale = 0, float32(math.NaN())
				}
			}
			for _, variant := range []struct{ res, out bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
				mk := func(on bool) []float32 {
					if on {
						return make([]float32, n)
					}
					return nil
				}
				q1, r1, o1 := make([]byte, n), mk(variant.res), mk(variant.out)
				q2, r2, o2 := make([]byte, n), mk(variant.res), mk(variant.out)
				k := quantFast(q1, v, r1, o1, inv, scale)
				var rr, oo []float32
				if r1 != nil {
					rr = r1[k:]
				}
				if o1 != nil {
					oo = o1[k:]
				}
				quantGo(q1[k:], v[k:], rr, oo, inv, scale)
				quantGo(q2, v, r2, o2, inv, scale)
				for i := range n {
					if q1[i] != q2[i] {
						t.Fatalf("n %d %+v: q[%d] of %v is %d, scalar %d", n, variant, i, v[i], int8(q1[i]), int8(q2[i]))
					}
					if r1 != nil && math.Float32bits(r1[i]) != math.Float32bits(r2[i]) {
						t.Fatalf("n %d %+v: res[%d] %v, scalar %v", n, variant, i, r1[i], r2[i])
					}
					if o1 != nil && math.Float32bits(o1[i]) != math.Float32bits(o2[i]) {
						t.Fatalf("n %d %+v: out[%d] %v, scalar %v", n, variant, i, o1[i], o2[i])
					}
				}
			}
		}
	}
}

// TestInt8DecodeKernelAgrees: decoding with the vector kernel gives bit for
// bit what the scalar loop gives, overwriting, accumulating and
// accumulating with a residual.
func TestInt8DecodeKernelAgrees(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	for _, n := range []int{0, 15, 16, 17, 100, 256} {
		q := make([]byte, n)
		base, add := make([]float32, n), make([]float32, n)
		for i := range q {
			q[i] = byte(rng.IntN(255) - 127)
			base[i], add[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
		}
		scale := float32(0.0123)
		for _, c := range []struct {
			acc bool
			add []float32
		}{{false, nil}, {true, nil}, {true, add}} {
			got := append([]float32(nil), base...)
			want := append([]float32(nil), base...)
			k := deqFast(got, q, c.add, scale, c.acc)
			for i := range n {
				d := float32(int8(q[i])) * scale
				switch {
				case !c.acc:
					want[i] = d
				case c.add != nil:
					want[i] = want[i] + c.add[i] + d
				default:
					want[i] += d
				}
				if i >= k {
					got[i] = want[i]
				}
			}
			for i := range n {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("n %d acc %v add %v: element %d is %v, scalar %v", n, c.acc, c.add != nil, i, got[i], want[i])
				}
			}
		}
	}
}

// TestInt8Subnormal: a block whose largest magnitude is subnormal (127/max
// overflows) still quantises to values within half a step, and the
// residual holds exactly what was lost.
func TestInt8Subnormal(t *testing.T) {
	v := []float32{1e-40, -3e-41, 0, 7e-41}
	res := make([]float32, len(v))
	src := append([]float32(nil), v...)
	p := int8Codec{}.encode(nil, src, nil, res, true)
	dec := make([]float32, len(v))
	if err := (int8Codec{}).decode(dec, p); err != nil {
		t.Fatal(err)
	}
	for i := range v {
		if res[i] != v[i]-dec[i] || src[i] != dec[i] {
			t.Errorf("element %d: %v decoded %v, residual %v", i, v[i], dec[i], res[i])
		}
		if d := math.Abs(float64(v[i] - dec[i])); d > 1e-40/127 {
			t.Errorf("element %d: %v decoded %v (error %g)", i, v[i], dec[i], d)
		}
	}
}

// TestBF16KernelsAgree: the vector kernels round and widen bit for bit as
// toBF16 and fromBF16 do, NaNs, infinities and ties included.
func TestBF16KernelsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	special := []uint32{0x3f808000, 0x3f818000, 0x7f7fffff, 0x7f800000, 0xff800000, 0x7fc00001, 0x7f800001, 0xff800001, 0x80000000, 0x00000001}
	for _, n := range []int{0, 15, 16, 17, 64, 100} {
		v := make([]float32, n)
		for i := range v {
			v[i] = math.Float32frombits(rng.Uint32())
			if rng.IntN(4) == 0 {
				v[i] = math.Float32frombits(special[rng.IntN(len(special))])
			}
		}
		h, out := make([]uint16, n), make([]float32, n)
		k := bf16EncFast(h, v, out)
		for i := range k {
			if want := toBF16(v[i]); h[i] != want || math.Float32bits(out[i]) != math.Float32bits(fromBF16(want)) {
				t.Fatalf("n %d: %08x became %04x (%08x), scalar %04x", n, math.Float32bits(v[i]), h[i], math.Float32bits(out[i]), want)
			}
		}
		for _, acc := range []bool{false, true} {
			dst := make([]float32, n)
			for i := range dst {
				dst[i] = float32(rng.NormFloat64())
			}
			want := append([]float32(nil), dst...)
			k := bf16DecFast(dst, h, acc)
			for i := range k {
				w := fromBF16(h[i])
				if acc {
					w += want[i]
				}
				if math.Float32bits(dst[i]) != math.Float32bits(w) {
					t.Fatalf("n %d acc %v: element %d is %v, scalar %v", n, acc, i, dst[i], w)
				}
			}
		}
	}
}

// TestInt8BlocksAgree: the codec's whole-block kernels (many blocks per
// call) encode, accumulate and decode bit for bit as one block at a time
// does, over blocks that are zero, hold an infinity or a NaN, or whose
// largest magnitude is subnormal (the kernel hands those back), with and
// without a residual to add and to keep, rounding or not, and a partial
// last block.
func TestInt8BlocksAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	n := 40*Int8Block + 7
	src := make([]float32, n)
	for i := range src {
		src[i] = float32(rng.NormFloat64()) * 1e-3
	}
	blk := func(b int) []float32 { return src[b*Int8Block : (b+1)*Int8Block] }
	clear(blk(3))
	blk(5)[7] = float32(math.Inf(1))
	blk(9)[1] = float32(math.NaN())
	for i := range blk(17) {
		blk(17)[i] = float32(rng.NormFloat64()) * 1e-40 // subnormal
	}
	blk(30)[Int8Block-1] = 0x1p-130
	add := make([]float32, n)
	for i := range add {
		add[i] = float32(rng.NormFloat64()) * 1e-4
	}
	for _, c := range []struct{ add, res, round bool }{{false, false, false}, {true, true, false}, {false, true, true}, {true, true, true}, {true, false, true}} {
		// One block at a time, as before the whole-block kernels.
		wantSrc := append([]float32(nil), src...)
		var a, wantRes []float32
		if c.add {
			a = add
		}
		if c.res {
			wantRes = make([]float32, n)
		}
		want := make([]byte, int8Size(n))
		p := want
		for lo := 0; lo < n; lo += Int8Block {
			hi := min(lo+Int8Block, n)
			v := append([]float32(nil), wantSrc[lo:hi]...)
			if a != nil {
				for i := range v {
					v[i] += a[lo+i]
				}
			}
			var r, o []float32
			if wantRes != nil {
				r = wantRes[lo:hi]
			}
			if c.round {
				o = wantSrc[lo:hi]
			}
			int8Block(p, v, r, o)
			p = p[4+hi-lo:]
		}
		gotSrc := append([]float32(nil), src...)
		var gotRes []float32
		if c.res {
			gotRes = make([]float32, n)
		}
		got := int8Codec{}.encode(nil, gotSrc, a, gotRes, c.round)
		if !bytes.Equal(got, want) {
			t.Fatalf("%+v: payloads differ", c)
		}
		for i := range n {
			if math.Float32bits(gotSrc[i]) != math.Float32bits(wantSrc[i]) || (c.res && math.Float32bits(gotRes[i]) != math.Float32bits(wantRes[i])) {
				t.Fatalf("%+v: element %d: src %v res %v, one block at a time %v %v", c, i, gotSrc[i], gotRes, wantSrc[i], wantRes)
			}
		}
		// Decoding and accumulating, against the scalar loop.
		for _, acc := range []bool{false, true} {
			dst := append([]float32(nil), add...)
			ref := append([]float32(nil), add...)
			var err error
			if acc {
				err = int8Codec{}.accumulate(dst, got, a)
			} else {
				err = int8Codec{}.decode(dst, got)
			}
			if err != nil {
				t.Fatal(err)
			}
			p := got
			for lo := 0; lo < n; lo += Int8Block {
				hi := min(lo+Int8Block, n)
				scale := math.Float32frombits(binary.LittleEndian.Uint32(p))
				for i := lo; i < hi; i++ {
					d := float32(int8(p[4+i-lo])) * scale
					switch {
					case !acc:
						ref[i] = d
					case a != nil:
						ref[i] = ref[i] + a[i] + d
					default:
						ref[i] += d
					}
				}
				p = p[4+hi-lo:]
			}
			for i := range n {
				if math.Float32bits(dst[i]) != math.Float32bits(ref[i]) {
					t.Fatalf("%+v acc %v: element %d decoded %v, scalar %v", c, acc, i, dst[i], ref[i])
				}
			}
		}
	}
}
