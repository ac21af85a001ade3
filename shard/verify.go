package shard

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// precheck walks the flatbuffers of an Arrow IPC file before the Arrow
// decoder sees them. The decoder trusts the lengths it reads and allocates
// them up front, so a few hostile bytes could ask for gigabytes; precheck
// rejects any file that is not shaped like a shard (one fixed-size-list
// field of integers, no dictionaries, no compression) or whose vectors
// cannot fit in the bytes that hold them. Out-of-range reads panic and are
// recovered by the caller.
func precheck(data []byte) error {
	const magic = "ARROW1"
	n := len(data)
	if n < 8+10 || string(data[:6]) != magic || string(data[n-6:]) != magic {
		return fmt.Errorf("no Arrow file magic")
	}
	flen := int(int32(binary.LittleEndian.Uint32(data[n-10:])))
	if flen <= 0 || flen > n-18 {
		return fmt.Errorf("footer length %d out of range", flen)
	}
	fb := fbuf(data[n-10-flen : n-10])
	footer := fb.root()
	// Footer: version, schema, dictionaries, recordBatches, custom_metadata.
	schema, ok := fb.table(footer, 1)
	if !ok {
		return fmt.Errorf("footer has no schema")
	}
	if err := fb.checkSchema(schema); err != nil {
		return err
	}
	if nd, _ := fb.vector(footer, 2, 24); nd != 0 {
		return fmt.Errorf("%d dictionary batches; shards have none", nd)
	}
	if err := fb.checkKV(footer, 4); err != nil {
		return err
	}
	nb, start := fb.vector(footer, 3, 24)
	for i := range nb {
		b := start + 24*i
		off := int64(binary.LittleEndian.Uint64(fb[b:]))
		meta := int64(int32(binary.LittleEndian.Uint32(fb[b+8:])))
		if off < 0 || meta < 8 || off > int64(n) || meta > int64(n)-off {
			return fmt.Errorf("record batch %d: block out of range", i)
		}
		if err := checkMessage(data[off : off+meta]); err != nil {
			return fmt.Errorf("record batch %d: %w", i, err)
		}
	}
	return nil
}

// fbuf is a flatbuffer; offsets are positions in it.
type fbuf []byte

func (b fbuf) u32(p int) int { return int(binary.LittleEndian.Uint32(b[p:])) }
func (b fbuf) u16(p int) int { return int(binary.LittleEndian.Uint16(b[p:])) }
func (b fbuf) root() int     { return b.u32(0) }

// field returns the position of field slot of the table at t, or 0.
func (b fbuf) field(t, slot int) int {
	vt := t - int(int32(b.u32(t)))
	if vt < 0 || 4+2*slot >= b.u16(vt) {
		return 0
	}
	if o := b.u16(vt + 4 + 2*slot); o != 0 {
		return t + o
	}
	return 0
}

// table returns the sub-table in field slot of t.
func (b fbuf) table(t, slot int) (int, bool) {
	p := b.field(t, slot)
	if p == 0 {
		return 0, false
	}
	return p + b.u32(p), true
}

// vector returns the length and first element of the vector in field slot,
// failing (by panic, recovered upstream) when it cannot fit in the buffer.
func (b fbuf) vector(t, slot, elem int) (int, int) {
	p := b.field(t, slot)
	if p == 0 {
		return 0, 0
	}
	v := p + b.u32(p)
	n := b.u32(v)
	if n > (len(b)-v-4)/elem {
		panic(fmt.Sprintf("vector of %d elements of %d bytes does not fit in %d bytes", n, elem, len(b)))
	}
	return n, v + 4
}

// byteField returns the ubyte in field slot of t (0 when absent).
func (b fbuf) byteField(t, slot int) byte {
	if p := b.field(t, slot); p != 0 {
		return b[p]
	}
	return 0
}

// checkKV bounds the custom_metadata vector in field slot of t.
func (b fbuf) checkKV(t, slot int) error {
	if n, _ := b.vector(t, slot, 4); n > 64 {
		return fmt.Errorf("%d custom metadata entries", n)
	}
	return nil
}

// Arrow type and message header enum values (Schema.fbs, Message.fbs).
const (
	fbTypeInt           = 2
	fbTypeFixedSizeList = 16
	fbHeaderSchema      = 1
	fbHeaderRecordBatch = 3
)

// checkSchema accepts only the schema shape of a shard.
func (b fbuf) checkSchema(s int) error {
	// Schema: endianness, fields, custom_metadata, features.
	if err := b.checkKV(s, 2); err != nil {
		return err
	}
	if n, _ := b.vector(s, 3, 8); n > 64 {
		return fmt.Errorf("%d schema features", n)
	}
	nf, start := b.vector(s, 1, 4)
	if nf != 1 {
		return fmt.Errorf("schema has %d fields, want 1 (%q)", nf, Column)
	}
	list := start + b.u32(start)
	// Field: name, nullable, type_type, type, dictionary, children, custom_metadata.
	if err := b.checkField(list, fbTypeFixedSizeList, 1); err != nil {
		return fmt.Errorf("column: %w", err)
	}
	_, cs := b.vector(list, 5, 4)
	if err := b.checkField(cs+b.u32(cs), fbTypeInt, 0); err != nil {
		return fmt.Errorf("column values: %w", err)
	}
	return nil
}

func (b fbuf) checkField(f int, typ byte, children int) error {
	if got := b.byteField(f, 2); got != typ {
		return fmt.Errorf("Arrow type %d, want %d", got, typ)
	}
	if b.field(f, 4) != 0 {
		return fmt.Errorf("dictionary-encoded")
	}
	if n, _ := b.vector(f, 5, 4); n != children {
		return fmt.Errorf("%d children, want %d", n, children)
	}
	if n, _ := b.vector(f, 0, 1); n > 1<<10 {
		return fmt.Errorf("field name of %d bytes", n)
	}
	return b.checkKV(f, 6)
}

// checkMessage accepts only an uncompressed record batch message.
func checkMessage(m []byte) error {
	if bytes.HasPrefix(m, []byte{0xff, 0xff, 0xff, 0xff}) {
		m = m[4:]
	}
	size := int(int32(binary.LittleEndian.Uint32(m)))
	if size <= 0 || size > len(m)-4 {
		return fmt.Errorf("message length %d out of range", size)
	}
	return checkHeader(fbuf(m[4:4+size]), false)
}

// checkStreamHeader checks the flatbuffer Message of a Flight data message
// from a peer: a shard's schema or an uncompressed record batch. Out-of-range
// reads panic; the caller recovers.
func checkStreamHeader(h []byte) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("malformed Arrow message: %v", p)
		}
	}()
	return checkHeader(fbuf(h), true)
}

// checkHeader checks a flatbuffer Message; schemaOK admits a schema message.
func checkHeader(fb fbuf, schemaOK bool) error {
	msg := fb.root()
	// Message: version, header_type, header, bodyLength, custom_metadata.
	if err := fb.checkKV(msg, 4); err != nil {
		return err
	}
	h := fb.byteField(msg, 1)
	if h == fbHeaderSchema && schemaOK {
		s, ok := fb.table(msg, 2)
		if !ok {
			return fmt.Errorf("schema message without a schema")
		}
		return fb.checkSchema(s)
	}
	if h != fbHeaderRecordBatch {
		return fmt.Errorf("message header type %d, want a record batch", h)
	}
	rb, ok := fb.table(msg, 2)
	if !ok {
		return fmt.Errorf("message has no record batch")
	}
	// RecordBatch: length, nodes, buffers, compression, variadicBufferCounts.
	if n, _ := fb.vector(rb, 1, 16); n > 16 {
		return fmt.Errorf("%d field nodes", n)
	}
	if n, _ := fb.vector(rb, 2, 16); n > 16 {
		return fmt.Errorf("%d buffers", n)
	}
	if fb.field(rb, 3) != 0 {
		return fmt.Errorf("compressed body; shards are uncompressed")
	}
	if n, _ := fb.vector(rb, 4, 8); n != 0 {
		return fmt.Errorf("%d variadic buffer counts", n)
	}
	return nil
}
