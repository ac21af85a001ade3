package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Limits on decoded peer input. They are far above what a real cluster
// sends and keep a hostile or corrupt message from allocating much.
const (
	maxName    = 256  // node names, addresses, backend, data and version strings
	maxText    = 1024 // reasons and error texts
	maxMembers = 4096 // ring and member-list lengths
)

// encoder appends the compact binary encoding used for node metadata and
// control messages: unsigned varints, length-prefixed strings and
// little-endian float64s.
type encoder struct{ b []byte }

func (e *encoder) byte1(v byte)     { e.b = append(e.b, v) }
func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) f64(v float64)    { e.b = binary.LittleEndian.AppendUint64(e.b, math.Float64bits(v)) }
func (e *encoder) bool1(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}
func (e *encoder) str(s string) {
	e.uvarint(uint64(len(s)))
	e.b = append(e.b, s...)
}

// decoder reads what encoder wrote. The first error sticks: later reads
// return zero values and err names the first field that was wrong.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) byte1(field string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail("%s: truncated", field)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) bool1(field string) bool {
	switch v := d.byte1(field); v {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail("%s: bad boolean %d", field, v)
		return false
	}
}

func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("%s: bad varint", field)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) f64(field string) float64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.fail("%s: truncated", field)
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
	d.b = d.b[8:]
	return v
}

func (d *decoder) str(field string, max int) string {
	n := d.uvarint(field)
	if d.err != nil {
		return ""
	}
	if n > uint64(max) {
		d.fail("%s: length %d exceeds %d", field, n, max)
		return ""
	}
	if uint64(len(d.b)) < n {
		d.fail("%s: truncated", field)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// count reads a list length and checks it against max and against the bytes
// left (every element takes at least minSize bytes), so that a forged length
// cannot make the caller allocate a huge slice.
func (d *decoder) count(field string, max, minSize int) int {
	n := d.uvarint(field)
	if d.err != nil {
		return 0
	}
	if n > uint64(max) {
		d.fail("%s: %d entries exceed %d", field, n, max)
		return 0
	}
	if n*uint64(minSize) > uint64(len(d.b)) {
		d.fail("%s: %d entries but only %d bytes left", field, n, len(d.b))
		return 0
	}
	return int(n)
}

// finish reports the first error, or trailing bytes after a complete message.
func (d *decoder) finish(what string) error {
	if d.err != nil {
		return fmt.Errorf("%s: %w", what, d.err)
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%s: %d trailing bytes", what, len(d.b))
	}
	return nil
}

var errVersion = errors.New("unsupported version")
