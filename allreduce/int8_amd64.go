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
	quantAVX2(q[:k], v[:k], part(res, 0, k), part(out, 0, k), inv, scale)
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
	deqAVX2(dst[:k], q[:k], part(add, 0, k), scale, acc)
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

// quantBlocksAVX2 encodes whole blocks of v (block a multiple of 32) into
// p, each as int8Block does, and returns the elements done: it stops before
// a block whose largest magnitude is a nonzero subnormal.
//
//go:noescape
func quantBlocksAVX2(p []byte, v, res, out []float32, block int) int

// deqBlocksAVX2 decodes whole blocks (block a multiple of 16) of an int8
// payload into dst, as deqAVX2 does for each block.
//
//go:noescape
func deqBlocksAVX2(dst []float32, p []byte, add []float32, block int, acc bool)

// int8Blocks encodes the longest prefix of whole blocks of v that the AVX2
// kernel takes into p and returns its length, a multiple of Int8Block.
func int8Blocks(p []byte, v, res, out []float32) int {
	k := len(v) / Int8Block * Int8Block
	if !haveAVX2 || k == 0 {
		return 0
	}
	return quantBlocksAVX2(p[:int8Size(k)], v[:k], part(res, 0, k), part(out, 0, k), Int8Block)
}

// deqBlocks decodes the whole blocks of dst from p (see deqFast for acc and
// add) and returns how many elements it did.
func deqBlocks(dst []float32, p []byte, add []float32, acc bool) int {
	k := len(dst) / Int8Block * Int8Block
	if !haveAVX2 || k == 0 {
		return 0
	}
	deqBlocksAVX2(dst[:k], p[:int8Size(k)], part(add, 0, k), Int8Block, acc)
	return k
}

// The whole-block kernels take blocks of a multiple of 32 elements.
var _ [0]struct{} = [Int8Block % 32]struct{}{}
