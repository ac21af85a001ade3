package allreduce

// bf16EncAVX2 rounds v (len a multiple of 16) to bfloat16 into h, and the
// rounded values into out if it is not nil (bf16_amd64.s).
//
//go:noescape
func bf16EncAVX2(h []uint16, v, out []float32)

// bf16DecAVX2 widens h into dst (len a multiple of 16), or adds it with acc.
//
//go:noescape
func bf16DecAVX2(dst []float32, h []uint16, acc bool)

// bf16EncFast encodes the longest prefix the AVX2 kernel takes and returns
// its length.
func bf16EncFast(h []uint16, v, out []float32) int {
	k := len(v) &^ 15
	if !haveAVX2 || k == 0 {
		return 0
	}
	var o []float32
	if out != nil {
		o = out[:k]
	}
	bf16EncAVX2(h[:k], v[:k], o)
	return k
}

// bf16DecFast decodes the longest prefix the AVX2 kernel takes and returns
// its length.
func bf16DecFast(dst []float32, h []uint16, acc bool) int {
	k := len(dst) &^ 15
	if !haveAVX2 || k == 0 {
		return 0
	}
	bf16DecAVX2(dst[:k], h[:k], acc)
	return k
}
