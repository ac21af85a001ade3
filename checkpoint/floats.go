package checkpoint

import (
	"encoding/binary"
	"io"
	"math"
	"unsafe"
)

// littleEndian is true on hosts whose float32 memory layout is the
// safetensors byte order, where tensors are written and read without a copy.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// chunk bounds the conversion buffer on big-endian hosts.
const chunk = 1 << 20

// byteView is the memory of f as bytes.
func byteView(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f))
}

// writeFloats writes f to w as little-endian float32.
func writeFloats(w io.Writer, f []float32) error {
	if littleEndian {
		_, err := w.Write(byteView(f))
		return err
	}
	buf := make([]byte, 0, 4*chunk)
	for len(f) > 0 {
		n := min(len(f), chunk)
		buf = buf[:0]
		for _, v := range f[:n] {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		}
		if _, err := w.Write(buf); err != nil {
			return err
		}
		f = f[n:]
	}
	return nil
}

// readFloats fills f with little-endian float32 values from r.
func readFloats(r io.Reader, f []float32) error {
	if _, err := io.ReadFull(r, byteView(f)); err != nil {
		return err
	}
	if !littleEndian {
		b := byteView(f)
		for i := range f {
			f[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	}
	return nil
}
