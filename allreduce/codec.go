package allreduce

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"unsafe"

	"github.com/klauspost/compress/zstd"
)

// Codec names accepted by Config.Codec.
const (
	CodecNone     = "none"      // fp32, exact
	CodecBF16     = "bf16"      // bfloat16, round to nearest even
	CodecBF16Zstd = "bf16-zstd" // bf16 split into byte planes, sign/exponent plane zstd-compressed
	CodecInt8     = "int8"      // int8 per block of Int8Block elements, one fp32 scale per block
	CodecPowerSGD = "powersgd"  // rank-r PowerSGD with error feedback (powersgd.go)
)

// Int8Block is the number of elements that share one scale in the int8 codec.
// A smaller block rounds small elements more finely (the scale follows the
// block's largest magnitude): at 256 the demo model's ELBO ended 1.3–2.9%
// above none's at 600 steps (three seeds), at 64 from 2.8% below to 0.95%
// above, for 4.6% more bytes (1.0625 per element against 1.0156). The
// whole-block kernels (quantBlocksAVX2, deqBlocksAVX2) keep 64 as fast as
// 256 was one block per call.
const Int8Block = 64

// Codecs lists the codec names in the order benchmarks report them.
var Codecs = []string{CodecNone, CodecBF16, CodecBF16Zstd, CodecInt8, CodecPowerSGD}

// A codec turns fp32 values into a message payload and back. Partial sums
// travel in the codec's format and are accumulated in fp32. One codec value is
// used by one goroutine at a time.
//
// Encoding, error feedback and rounding happen in one pass over the values,
// and decoding adds straight into the accumulator: on a ring that is memory
// bound, every extra pass over a chunk costs as much as the arithmetic.
type codec interface {
	// encode appends the encoding of y = src + add (add may be nil) to dst.
	// If res is not nil it stores there what the encoding lost, y −
	// decode(encoding); if round, it overwrites src with decode(encoding).
	encode(dst []byte, src, add, res []float32, round bool) []byte
	// accumulate adds add (if not nil) and then the decoded payload to dst.
	accumulate(dst []float32, p []byte, add []float32) error
	// decode overwrites dst with the decoded payload.
	decode(dst []float32, p []byte) error
}

// sum2 returns a[i] + b[i], or a[i] if b is nil (the caller hoists the test
// of b out of its fast paths).
func sum2(a, b []float32, i int) float32 {
	if b == nil {
		return a[i]
	}
	return a[i] + b[i]
}

// codecInfo describes a codec independently of any instance.
type codecInfo struct {
	id   uint8
	name string
	// lossy codecs round; int8 keeps an error-feedback residual.
	lossy, feedback bool
	// check reports whether a payload of plen bytes can hold n elements.
	check func(n, plen int) error
	// width is the bytes per element of a codec whose payload is a plain
	// array of fixed-width elements (decodable in arbitrary pieces), 0 for a
	// block codec.
	width int
	// maxSize bounds the payload for n elements (a hint for buffer sizes).
	maxSize func(n int) int
	make    func() (codec, error)
}

var codecTable = []*codecInfo{
	{id: 1, name: CodecNone, width: 4, check: exactSize(4), maxSize: func(n int) int { return 4 * n },
		make: func() (codec, error) { return noneCodec{}, nil }},
	{id: 2, name: CodecBF16, lossy: true, width: 2, check: exactSize(2), maxSize: func(n int) int { return 2 * n },
		make: func() (codec, error) { return bf16Codec{}, nil }},
	{id: 3, name: CodecBF16Zstd, lossy: true, check: checkZstd, maxSize: func(n int) int { return 2*n + n>>6 + 256 },
		make: newZstdCodec},
	{id: 4, name: CodecInt8, lossy: true, feedback: true, check: exactInt8, maxSize: int8Size,
		make: func() (codec, error) { return int8Codec{}, nil }},
	// PowerSGD sums its uncompressed values, Ps and Qs in fp32; the
	// compression happens around the ring, not in the codec.
	{id: 5, name: CodecPowerSGD, feedback: true, width: 4, check: exactSize(4), maxSize: func(n int) int { return 4 * n },
		make: func() (codec, error) { return noneCodec{}, nil }},
}

func codecByName(name string) (*codecInfo, error) {
	for _, c := range codecTable {
		if c.name == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("unknown codec %q (want one of %v)", name, Codecs)
}

func codecByID(id uint8) (*codecInfo, error) {
	for _, c := range codecTable {
		if c.id == id {
			return c, nil
		}
	}
	return nil, fmt.Errorf("unknown codec id %d", id)
}

func exactSize(per int) func(n, plen int) error {
	return func(n, plen int) error {
		if plen != per*n {
			return fmt.Errorf("want %d bytes, have %d", per*n, plen)
		}
		return nil
	}
}

// grow extends b by n bytes, reallocating if needed.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

// littleEndian reports whether float32 slices can be copied to the wire as
// they lie in memory.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// unalignedOK reports whether the machine loads misaligned floats at full
// speed, as amd64 and arm64 do. gRPC's receive buffers split a payload at
// arbitrary byte offsets.
var unalignedOK = runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64"

// f32s views p as float32s when the machine is little-endian and p is
// aligned (or need not be).
func f32s(p []byte) ([]float32, bool) {
	if !littleEndian || len(p) == 0 || (!unalignedOK && uintptr(unsafe.Pointer(&p[0]))%4 != 0) {
		return nil, false
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&p[0])), len(p)/4), true
}

// none: little-endian fp32.
type noneCodec struct{}

func (noneCodec) encode(dst []byte, src, add, res []float32, round bool) []byte {
	at := len(dst)
	dst = grow(dst, 4*len(src))
	v, ok := f32s(dst[at:])
	switch {
	case ok && add == nil:
		copy(v, src)
	case ok:
		v, add = v[:len(src)], add[:len(src)]
		for i, x := range src {
			v[i] = x + add[i]
		}
	default:
		for i := range src {
			binary.LittleEndian.PutUint32(dst[at+4*i:], math.Float32bits(sum2(src, add, i)))
		}
	}
	if res != nil {
		clear(res[:len(src)]) // exact
	}
	if round && add != nil {
		for i := range src {
			src[i] += add[i]
		}
	}
	return dst
}

func (noneCodec) accumulate(dst []float32, p []byte, add []float32) error {
	if len(p) != 4*len(dst) {
		return fmt.Errorf("none: %d bytes for %d elements", len(p), len(dst))
	}
	v, ok := f32s(p)
	switch {
	case ok && add == nil:
		add2(dst, dst, v) // AVX2 where the machine has it
	case ok:
		add2(dst, dst, add) // (dst + add) + v, as the scalar loop
		add2(dst, dst, v)
	default:
		for i := range dst {
			dst[i] = sum2(dst, add, i) + math.Float32frombits(binary.LittleEndian.Uint32(p[4*i:]))
		}
	}
	return nil
}

func (noneCodec) decode(dst []float32, p []byte) error {
	if len(p) != 4*len(dst) {
		return fmt.Errorf("none: %d bytes for %d elements", len(p), len(dst))
	}
	if littleEndian && len(dst) > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*len(dst)), p)
		return nil
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(p[4*i:]))
	}
	return nil
}

// toBF16 rounds x to bfloat16, to nearest even; NaNs stay (quiet) NaNs.
func toBF16(x float32) uint16 {
	b := math.Float32bits(x)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

func fromBF16(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// bf16: little-endian bfloat16.
type bf16Codec struct{}

func (bf16Codec) encode(dst []byte, src, add, res []float32, round bool) []byte {
	at := len(dst)
	dst = grow(dst, 2*len(src))
	p := dst[at : at+2*len(src)]
	h, ok := u16s(p)
	switch {
	case ok && add == nil && res == nil:
		h = h[:len(src)]
		var out []float32
		if round {
			out = src
		}
		k := bf16EncFast(h, src, out)
		if !round {
			for i, x := range src[k:] {
				h[k+i] = toBF16(x)
			}
			return dst
		}
		for i, x := range src[k:] {
			b := toBF16(x)
			h[k+i] = b
			src[k+i] = fromBF16(b)
		}
		return dst
	}
	for i := range src {
		y := sum2(src, add, i)
		b := toBF16(y)
		p[2*i] = byte(b)
		p[2*i+1] = byte(b >> 8)
		if res != nil {
			res[i] = y - fromBF16(b)
		}
		if round {
			src[i] = fromBF16(b)
		}
	}
	return dst
}

// u16s views p as uint16s when the machine is little-endian and p is aligned
// (or need not be).
func u16s(p []byte) ([]uint16, bool) {
	if !littleEndian || len(p) == 0 || (!unalignedOK && uintptr(unsafe.Pointer(&p[0]))%2 != 0) {
		return nil, false
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&p[0])), len(p)/2), true
}

func (bf16Codec) accumulate(dst []float32, p []byte, add []float32) error {
	if len(p) != 2*len(dst) {
		return fmt.Errorf("bf16: %d bytes for %d elements", len(p), len(dst))
	}
	if h, ok := u16s(p); ok && add == nil {
		h = h[:len(dst)]
		for i := bf16DecFast(dst, h, true); i < len(dst); i++ {
			dst[i] += fromBF16(h[i])
		}
		return nil
	}
	p = p[:2*len(dst)]
	for i := range dst {
		dst[i] = sum2(dst, add, i) + fromBF16(uint16(p[2*i])|uint16(p[2*i+1])<<8)
	}
	return nil
}

func (bf16Codec) decode(dst []float32, p []byte) error {
	if len(p) != 2*len(dst) {
		return fmt.Errorf("bf16: %d bytes for %d elements", len(p), len(dst))
	}
	if h, ok := u16s(p); ok {
		h = h[:len(dst)]
		for i := bf16DecFast(dst, h, false); i < len(dst); i++ {
			dst[i] = fromBF16(h[i])
		}
		return nil
	}
	p = p[:2*len(dst)]
	for i := range dst {
		dst[i] = fromBF16(uint16(p[2*i]) | uint16(p[2*i+1])<<8)
	}
	return nil
}

// int8Size is the payload size of n elements: per block a float32 scale then
// one signed byte per element.
func int8Size(n int) int { return n + 4*((n+Int8Block-1)/Int8Block) }

func exactInt8(n, plen int) error {
	if want := int8Size(n); plen != want {
		return fmt.Errorf("want %d bytes, have %d", want, plen)
	}
	return nil
}

// int8: per block, scale = max|x|/127 and q = round(x/scale) in [-127, 127].
// A block holding a NaN or an infinity is sent with a NaN scale, so the
// receivers see NaN rather than a silently wrong number.
type int8Codec struct{}

// part returns v[lo:hi], or nil for a nil v (an optional output or addend).
func part(v []float32, lo, hi int) []float32 {
	if v == nil {
		return nil
	}
	return v[lo:hi]
}

// int8Span is how many elements encode adds a residual to at a time (on
// the stack): a multiple of the block, so that the kernel runs whole blocks.
const int8Span = 16 * Int8Block

func (int8Codec) encode(dst []byte, src, add, res []float32, round bool) []byte {
	at := len(dst)
	dst = grow(dst, int8Size(len(src)))
	p := dst[at:]
	var y [int8Span]float32 // src + add
	for lo := 0; lo < len(src); {
		n := min(len(src)-lo, int8Span)
		blk := src[lo : lo+n]
		v := blk // out may alias v: each element is read before it is written
		if add != nil {
			v = y[:n]
			add2(v, blk, add[lo:lo+n])
		}
		e := part(res, lo, lo+n)
		var out []float32
		if round {
			out = blk
		}
		// Whole blocks in one kernel call; then one block here (the
		// span's tail, a subnormal maximum, or every block without AVX2).
		k := int8Blocks(p, v, e, out)
		p = p[int8Size(k):]
		if k < n {
			m := min(Int8Block, n-k)
			int8Block(p, v[k:k+m], part(e, k, k+m), part(out, k, k+m))
			p = p[4+m:]
			k += m
		}
		lo += k
	}
	return dst
}

// int8Block writes the scale and the quantised values of one block v to p,
// and in the same pass what decoding loses to res and the decoded values to
// out, each if not nil.
func int8Block(p []byte, v, res, out []float32) {
	// The largest magnitude, compared as bits: for non-negative floats the
	// integer order is the float order, and Inf and NaN sort last.
	mb := absMax(v)
	m := math.Float32frombits(mb)
	scale, inv := m/127, float32(0)
	if mb >= 0x7f800000 {
		scale = float32(math.NaN())
	} else if m > 0 {
		inv = 127 / m
	}
	binary.LittleEndian.PutUint32(p, math.Float32bits(scale))
	q := p[4 : 4+len(v)]
	if inv > math.MaxFloat32 {
		// m is subnormal and 127/m overflows: quantise in float64.
		for i, x := range v {
			k := int32(math.RoundToEven(float64(x) * (127 / float64(m))))
			q[i] = byte(int8(k))
			d := float32(k) * scale
			if res != nil {
				res[i] = x - d
			}
			if out != nil {
				out[i] = d
			}
		}
		return
	}
	k := quantFast(q, v, res, out, inv, scale)
	quantGo(q[k:], v[k:], part(res, k, len(v)), part(out, k, len(v)), inv, scale)
}

// absMaxGo is the largest of v's values' bits with the sign cleared.
func absMaxGo(v []float32) uint32 {
	var mb uint32
	for _, x := range v {
		mb = max(mb, math.Float32bits(x)&0x7fffffff)
	}
	return mb
}

// quantGo sets q[i] = round(v[i]·inv), and res[i] = v[i] − q[i]·scale and
// out[i] = q[i]·scale where res and out are not nil.
func quantGo(q []byte, v, res, out []float32, inv, scale float32) {
	q = q[:len(v)]
	// Adding 1.5·2^23 rounds to the nearest integer, ties to even.
	// |x·inv| ≤ 127·(1+2^-22), so the result needs no clamping.
	const magic = 12582912
	switch {
	case res == nil && out == nil:
		for i, x := range v {
			q[i] = byte(int8(int32(math.Float32bits(x*inv+magic)&0x7fffff) - 0x400000))
		}
	case out == nil:
		res = res[:len(v)]
		for i, x := range v {
			k := int32(math.Float32bits(x*inv+magic)&0x7fffff) - 0x400000
			q[i] = byte(int8(k))
			res[i] = x - float32(k)*scale
		}
	default:
		out = out[:len(v)]
		for i, x := range v {
			k := int32(math.Float32bits(x*inv+magic)&0x7fffff) - 0x400000
			q[i] = byte(int8(k))
			d := float32(k) * scale
			if res != nil {
				res[i] = x - d
			}
			out[i] = d
		}
	}
}

func (int8Codec) accumulate(dst []float32, p []byte, add []float32) error {
	if len(p) != int8Size(len(dst)) {
		return fmt.Errorf("int8: %d bytes for %d elements", len(p), len(dst))
	}
	k := deqBlocks(dst, p, add, true)
	dst, p, add = dst[k:], p[int8Size(k):], part(add, k, len(add))
	for lo := 0; lo < len(dst); lo += Int8Block {
		blk := dst[lo:min(lo+Int8Block, len(dst))]
		scale := math.Float32frombits(binary.LittleEndian.Uint32(p))
		q := p[4 : 4+len(blk)]
		var a []float32
		if add != nil {
			a = add[lo : lo+len(blk)]
		}
		k := deqFast(blk, q, a, scale, true)
		blk, q = blk[k:], q[k:]
		if a != nil {
			a = a[k:]
			for i := range blk {
				blk[i] = blk[i] + a[i] + float32(int8(q[i]))*scale
			}
		} else {
			for i := range blk {
				blk[i] += float32(int8(q[i])) * scale
			}
		}
		p = p[4+len(q)+k:]
	}
	return nil
}

func (int8Codec) decode(dst []float32, p []byte) error {
	if len(p) != int8Size(len(dst)) {
		return fmt.Errorf("int8: %d bytes for %d elements", len(p), len(dst))
	}
	k := deqBlocks(dst, p, nil, false)
	dst, p = dst[k:], p[int8Size(k):]
	for lo := 0; lo < len(dst); lo += Int8Block {
		blk := dst[lo:min(lo+Int8Block, len(dst))]
		scale := math.Float32frombits(binary.LittleEndian.Uint32(p))
		q := p[4 : 4+len(blk)]
		k := deqFast(blk, q, nil, scale, false)
		for i := range blk[k:] {
			blk[k+i] = float32(int8(q[k+i])) * scale
		}
		p = p[4+len(blk):]
	}
	return nil
}

// bf16-zstd: the bf16 values split into two byte planes. The high plane (sign
// and most of the exponent) is zstd-compressed; the low plane (mostly
// mantissa, close to random) is sent raw. Payload: u32 length of the
// compressed high plane, the compressed plane, then the low plane.
type zstdCodec struct {
	enc   *zstd.Encoder
	dec   *zstd.Decoder
	plane []byte // high plane scratch, reused
}

func newZstdCodec() (codec, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false),
		// The sign/exponent plane has few repeats but a skewed distribution:
		// entropy-code it even when no matches are found.
		zstd.WithAllLitEntropyCompression(true))
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(maxChunkBytes/4), zstd.WithDecoderMaxWindow(maxChunkBytes/4), zstd.IgnoreChecksum(true))
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	return &zstdCodec{enc: enc, dec: dec}, nil
}

func checkZstd(n, plen int) error {
	if plen < 4+n {
		return fmt.Errorf("want at least %d bytes, have %d", 4+n, plen)
	}
	return nil
}

func (z *zstdCodec) encode(dst []byte, src, add, res []float32, round bool) []byte {
	n := len(src)
	if cap(z.plane) < 2*n {
		z.plane = make([]byte, 2*n)
	}
	hi, lo := z.plane[:n:n], z.plane[n:2*n]
	lo = lo[:len(hi)]
	if add == nil && res == nil && !round {
		for i, x := range src[:len(hi)] {
			h := toBF16(x)
			hi[i], lo[i] = byte(h>>8), byte(h)
		}
	} else {
		for i := range hi {
			y := sum2(src, add, i)
			h := toBF16(y)
			hi[i], lo[i] = byte(h>>8), byte(h)
			if res != nil {
				res[i] = y - fromBF16(h)
			}
			if round {
				src[i] = fromBF16(h)
			}
		}
	}
	at := len(dst)
	dst = grow(dst, 4)
	dst = z.enc.EncodeAll(hi, dst)
	binary.LittleEndian.PutUint32(dst[at:], uint32(len(dst)-at-4))
	return append(dst, lo...)
}

// planes decompresses the high plane and returns both planes.
func (z *zstdCodec) planes(n int, p []byte) (hi, lo []byte, err error) {
	if len(p) < 4+n {
		return nil, nil, fmt.Errorf("bf16-zstd: %d bytes for %d elements", len(p), n)
	}
	clen := int64(binary.LittleEndian.Uint32(p))
	if clen != int64(len(p)-4-n) {
		return nil, nil, fmt.Errorf("bf16-zstd: compressed plane of %d bytes in a %d-byte payload for %d elements", clen, len(p), n)
	}
	if cap(z.plane) < n {
		z.plane = make([]byte, n)
	}
	hi, err = z.dec.DecodeAll(p[4:4+clen], z.plane[:0])
	if err != nil {
		return nil, nil, fmt.Errorf("bf16-zstd: %w", err)
	}
	if len(hi) != n {
		return nil, nil, fmt.Errorf("bf16-zstd: high plane has %d bytes, want %d", len(hi), n)
	}
	if cap(hi) > cap(z.plane) {
		z.plane = hi[:0]
	}
	return hi, p[4+clen:], nil
}

func (z *zstdCodec) accumulate(dst []float32, p []byte, add []float32) error {
	hi, lo, err := z.planes(len(dst), p)
	if err != nil {
		return err
	}
	lo = lo[:len(dst)]
	for i := range dst {
		dst[i] = sum2(dst, add, i) + fromBF16(uint16(hi[i])<<8|uint16(lo[i]))
	}
	return nil
}

func (z *zstdCodec) decode(dst []float32, p []byte) error {
	hi, lo, err := z.planes(len(dst), p)
	if err != nil {
		return err
	}
	lo = lo[:len(dst)]
	for i := range dst {
		dst[i] = fromBF16(uint16(hi[i])<<8 | uint16(lo[i]))
	}
	return nil
}
