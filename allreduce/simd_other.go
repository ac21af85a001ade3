//go:build !amd64

package allreduce

// absMax is the largest of v's values' bits with the sign cleared.
func absMax(v []float32) uint32 { return absMaxGo(v) }

// quantFast has no vector kernel here: the scalar loop does everything.
func quantFast(q []byte, v, res, out []float32, inv, scale float32) int { return 0 }

// deqFast has no vector kernel here: the scalar loop does everything.
func deqFast(dst []float32, q []byte, add []float32, scale float32, acc bool) int { return 0 }

// int8Blocks has no vector kernel here.
func int8Blocks(p []byte, v, res, out []float32) int { return 0 }

// deqBlocks has no vector kernel here.
func deqBlocks(dst []float32, p []byte, add []float32, acc bool) int { return 0 }

// bf16EncFast has no vector kernel here.
func bf16EncFast(h []uint16, v, out []float32) int { return 0 }

// bf16DecFast has no vector kernel here.
func bf16DecFast(dst []float32, h []uint16, acc bool) int { return 0 }

// add2 sets dst[i] = a[i] + b[i].
func add2(dst, a, b []float32) {
	a, b = a[:len(dst)], b[:len(dst)]
	for i := range a {
		dst[i] = a[i] + b[i]
	}
}
