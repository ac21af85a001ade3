package allreduce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"

	"google.golang.org/grpc/mem"
)

// A message on the wire is a fixed 48-byte little-endian header followed by
// a payload:
//
//	0  magic "DTAR"      4  version       5  kind     6  codec   7  flags
//	8  generation u64   16  step u64     24  bucket u32
//	28 hop u16 (index of the ring step, 0..2(n-1)-1; abort: rank blamed)
//	30 from u16 (sender rank)
//	32 chunk u32 (abort: rank that saw the failure)  36 count u32 (elements)
//	40 payload length u32  44 CRC-32C of the payload (0 without flagCRC)
//
// The CRC covers the payload only, so that a member forwarding an all-gather
// chunk rewrites hop and sender without touching the payload. Data messages
// carry it when the ring runs with Config.Checksum; control messages always.
const (
	headerSize = 48
	version    = 1

	// maxPayload bounds what a decoder accepts (a chunk is far smaller).
	maxPayload = 64 << 20
	// maxAbortText bounds the reason carried by an abort message.
	maxAbortText = 1024
)

var magic = [4]byte{'D', 'T', 'A', 'R'}

const (
	kindData  = 1
	kindAbort = 2
	kindBeat  = 3 // heartbeat: "alive, waiting for my left neighbour"
)

// flagCRC marks a message whose header carries its payload's CRC-32C.
const flagCRC = 1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// header is the decoded form of a message header.
type header struct {
	kind   uint8
	codec  uint8
	flags  uint8
	gen    uint64
	step   uint64
	bucket uint32
	hop    uint16
	from   uint16
	chunk  uint32
	count  uint32
}

// put writes h and the payload's length (and, with flagCRC, its checksum)
// into b[:headerSize].
func (h *header) put(b []byte, payload []byte) {
	copy(b[0:4], magic[:])
	b[4] = version
	b[5] = h.kind
	b[6] = h.codec
	b[7] = h.flags
	binary.LittleEndian.PutUint64(b[8:], h.gen)
	binary.LittleEndian.PutUint64(b[16:], h.step)
	binary.LittleEndian.PutUint32(b[24:], h.bucket)
	binary.LittleEndian.PutUint16(b[28:], h.hop)
	binary.LittleEndian.PutUint16(b[30:], h.from)
	binary.LittleEndian.PutUint32(b[32:], h.chunk)
	binary.LittleEndian.PutUint32(b[36:], h.count)
	binary.LittleEndian.PutUint32(b[40:], uint32(len(payload)))
	var sum uint32
	if h.flags&flagCRC != 0 {
		sum = crc32.Checksum(payload, castagnoli)
	}
	binary.LittleEndian.PutUint32(b[44:], sum)
}

// rewrite changes the hop and sender of an encoded message in place.
func rewrite(b []byte, hop, from uint16) {
	binary.LittleEndian.PutUint16(b[28:], hop)
	binary.LittleEndian.PutUint16(b[30:], from)
}

var errShort = errors.New("message shorter than its header")

// decodeHeader checks a message's header against a payload of plen bytes
// and returns it with the payload checksum it announces (meaningful with
// flagCRC). Everything but the checksum is checked; it never panics,
// whatever hb holds.
func decodeHeader(hb []byte, plen int) (header, uint32, error) {
	var h header
	if len(hb) < headerSize {
		return h, 0, fmt.Errorf("%w: %d bytes", errShort, len(hb))
	}
	b := hb[:headerSize]
	if [4]byte(b[0:4]) != magic {
		return h, 0, fmt.Errorf("bad magic %q", b[0:4])
	}
	if b[4] != version {
		return h, 0, fmt.Errorf("unsupported version %d (want %d)", b[4], version)
	}
	if b[7]&^flagCRC != 0 {
		return h, 0, fmt.Errorf("unknown flags %#x", b[7])
	}
	h.kind, h.codec, h.flags = b[5], b[6], b[7]
	h.gen = binary.LittleEndian.Uint64(b[8:])
	h.step = binary.LittleEndian.Uint64(b[16:])
	h.bucket = binary.LittleEndian.Uint32(b[24:])
	h.hop = binary.LittleEndian.Uint16(b[28:])
	h.from = binary.LittleEndian.Uint16(b[30:])
	h.chunk = binary.LittleEndian.Uint32(b[32:])
	h.count = binary.LittleEndian.Uint32(b[36:])
	hlen := binary.LittleEndian.Uint32(b[40:])
	sum := binary.LittleEndian.Uint32(b[44:])
	if sum != 0 && h.flags&flagCRC == 0 {
		return h, 0, fmt.Errorf("checksum %08x in a message flagged as having none", sum)
	}
	if uint64(hlen) != uint64(plen) {
		return h, 0, fmt.Errorf("header says %d payload bytes, message has %d", hlen, plen)
	}
	if hlen > maxPayload {
		return h, 0, fmt.Errorf("payload of %d bytes exceeds the limit of %d", hlen, maxPayload)
	}
	switch h.kind {
	case kindData:
		c, err := codecByID(h.codec)
		if err != nil {
			return h, 0, err
		}
		if err := c.check(int(h.count), plen); err != nil {
			return h, 0, fmt.Errorf("%s payload of %d elements: %w", c.name, h.count, err)
		}
	case kindAbort:
		if h.count != 0 || plen > maxAbortText {
			return h, 0, fmt.Errorf("abort message with count %d and %d bytes of text", h.count, plen)
		}
	case kindBeat:
		if h.count != 0 || plen != 0 {
			return h, 0, fmt.Errorf("heartbeat with count %d and %d bytes of payload", h.count, plen)
		}
	default:
		return h, 0, fmt.Errorf("unknown message kind %d", h.kind)
	}
	return h, sum, nil
}

// errChecksum reports a payload whose CRC-32C differs from its header's.
type errChecksum struct{ got, want uint32 }

func (e errChecksum) Error() string {
	return fmt.Sprintf("payload checksum %08x, header says %08x", e.got, e.want)
}

// decodeMessage checks a whole message held in b, checksum included if it
// has one, and returns its header and payload. The payload aliases b. It never panics,
// whatever b holds.
func decodeMessage(b []byte) (header, []byte, error) {
	if len(b) < headerSize {
		return header{}, nil, fmt.Errorf("%w: %d bytes", errShort, len(b))
	}
	payload := b[headerSize:]
	h, sum, err := decodeHeader(b[:headerSize], len(payload))
	if err != nil {
		return h, nil, err
	}
	if h.flags&flagCRC != 0 {
		if got := crc32.Checksum(payload, castagnoli); got != sum {
			return h, nil, errChecksum{got, sum}
		}
	}
	return h, payload, nil
}

// A Frame is one message buffer. Frames come from a Pool and go back to it
// with Release, so a step allocates nothing once the pools are warm.
//
// A frame from a Transport's inbox either holds a message (Buf) or reports
// that the stream from Peer broke (Err).
type Frame struct {
	// Buf holds the message, or only its header when the payload is in parts.
	Buf []byte
	// parts, when not empty, hold the payload as received: views of the
	// transport's receive buffers, kept instead of copied out. Release
	// frees them; a transport sending the frame on takes them over.
	parts mem.BufferSlice

	Peer string // address of the member that sent it (set by the transport)
	Err  error  // the stream from Peer failed; Buf is empty
	// LastGen is the generation of the last message seen on the stream that
	// broke, so that the end of an old generation's stream is not mistaken
	// for a failure in the current one. Zero if none was seen.
	LastGen uint64

	pool *Pool
	// via is the connection a link is about to send f on (see sendConn).
	via *sendConn
}

// Len returns the length of the message.
func (f *Frame) Len() int { return len(f.Buf) + f.parts.Len() }

// header returns the message's header bytes (short if the message is).
func (f *Frame) header() []byte { return f.Buf[:min(len(f.Buf), headerSize)] }

// payload appends the payload's pieces, in order, to dst.
func (f *Frame) payload(dst [][]byte) [][]byte {
	if len(f.parts) == 0 {
		if len(f.Buf) > headerSize {
			dst = append(dst, f.Buf[headerSize:])
		}
		return dst
	}
	for _, b := range f.parts {
		dst = append(dst, b.ReadOnlyData())
	}
	return dst
}

// bytes returns the whole message in one slice, joining the parts into Buf
// if need be.
func (f *Frame) bytes() []byte {
	if len(f.parts) > 0 {
		n := len(f.Buf)
		f.Buf = grow(f.Buf, f.parts.Len())
		for _, b := range f.parts {
			n += copy(f.Buf[n:], b.ReadOnlyData())
		}
		f.freeParts()
	}
	return f.Buf
}

func (f *Frame) freeParts() {
	f.parts.Free()
	clear(f.parts)
	f.parts = f.parts[:0]
}

// Release returns f to its pool. f must not be used afterwards.
func (f *Frame) Release() {
	f.freeParts()
	if f.pool != nil {
		f.pool.put(f)
	}
}

// minFrameCap keeps frames above gRPC's buffer-pooling threshold, so that
// gRPC always hands a sent frame back through Release (mem.NewBuffer).
const minFrameCap = 4096

// A Pool recycles frames. It never blocks: when empty it allocates, and the
// frames allocated stay in the pool afterwards.
type Pool struct {
	mu   sync.Mutex
	free []*Frame
}

// Get returns a frame whose Buf has length size.
func (p *Pool) Get(size int) *Frame {
	p.mu.Lock()
	var f *Frame
	if n := len(p.free); n > 0 {
		f = p.free[n-1]
		p.free = p.free[:n-1]
	}
	p.mu.Unlock()
	if f == nil {
		f = &Frame{pool: p}
	}
	if cap(f.Buf) < size {
		f.Buf = make([]byte, max(size, minFrameCap))
	}
	f.Buf = f.Buf[:size]
	return f
}

func (p *Pool) put(f *Frame) {
	f.Peer, f.Err, f.LastGen, f.via = "", nil, 0, nil
	p.mu.Lock()
	p.free = append(p.free, f)
	p.mu.Unlock()
}
