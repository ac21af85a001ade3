package allreduce

import "golang.org/x/sys/cpu"

// The int8 codec's loops in AVX2 (int8_amd64.s): Go does not vectorise,
// and scalar quantisation cost the ring more than the bytes it saved.
var haveAVX2 = cpu.X86.HasAVX2

// absMaxAVX2 returns the largest of v's values' bits with the sign cleared;
// len(v) is a multiple of 32.
//
//go:noescape
func absMaxAVX2(v []float32) uint32

// quantAVX2 quantises v (len a multiple of 32) into q, and writes what
// decoding loses to res and the decoded values to out, each if not nil.
//
//go:noescape
func quantAVX2(q []byte, v, res, out []float32, inv, scale float32)

// absMax is the largest of v's values' bits with the sign cleared.
func absMax(v []float32) uint32 {
	var mb uint32
	if haveAVX2 && len(v) >= 32 {
		k := len(v) &^ 31
		mb = absMaxAVX2(v[:k])
		v = v[k:]
	}
	return max(mb, absMaxGo(v))
}

// quantFast quantises the longest prefix of v that the AVX2 kernel takes
// and returns its length.
func quantFast(q []byte, v, res, out []float32, inv, scale float32) int {
	if !haveAVX2 {
		return 0
	}
	k := len(v) &^ 31
	if k == 0 {
		return 0
	}
	var r, o []float32
	if res != nil {
		r = res[:k]
	}
	if out != nil {
		o = out[:k]
	}
	quantAVX2(q[:k], v[:k], r, o, inv, scale)
	return k
}

// deqAVX2 decodes q into dst (len a multiple of 16): dst[i] = q[i]·scale,
// or with acc dst[i] = dst[i] (+ add[i] if add is not nil) + q[i]·scale.
//
//go:noescape
func deqAVX2(dst []float32, q []byte, add []float32, scale float32, acc bool)

// deqFast decodes the longest prefix of dst that the AVX2 kernel takes and
// returns its length.
func deqFast(dst []float32, q []byte, add []float32, scale float32, acc bool) int {
	k := len(dst) &^ 15
	if !haveAVX2 || k == 0 {
		return 0
	}
	var a []float32
	if add != nil {
		a = add[:k]
	}
	deqAVX2(dst[:k], q[:k], a, scale, acc)
	return k
}

// addAVX2 sets dst[i] = a[i] + b[i] (len a multiple of 16).
//
//go:noescape
func addAVX2(dst, a, b []float32)

// add2 sets dst[i] = a[i] + b[i].
func add2(dst, a, b []float32) {
	k := 0
	if haveAVX2 {
		k = len(dst) &^ 15
		addAVX2(dst[:k], a[:k], b[:k])
	}
	a, b = a[k:len(dst)], b[k:len(dst)]
	for i := range a {
		dst[k+i] = a[i] + b[i]
	}
}
