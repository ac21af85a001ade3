package allreduce

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"

	"google.golang.org/grpc/mem"
)

// sendConn is the TCP connection under a link's gRPC client, written without
// gRPC's write buffer (WithWriteBufferSize(0)): gRPC cuts every message into
// 16 KiB HTTP/2 DATA frames (a constant of gRPC-go) and, with its buffer,
// copies each into it before one write(2) per 512 KiB; without it, it would
// make two or three system calls per 16 KiB frame. sendConn reads the HTTP/2
// framing gRPC writes and gathers it instead: headers and other small writes
// are copied, DATA payloads kept by reference, and the lot goes out in one
// writev(2) when a gRPC message ends (the 5-byte length prefix in the DATA
// payloads says where), when any other frame ends (settings, window updates,
// headers: nothing that the peer waits for is held back), or when flushAt
// bytes are pending. So a message is written with as few system calls as
// before and no copy in user space.
//
// The payloads referenced must outlive the write: gRPC frees a message's
// buffers once it has handed their bytes to Write, so the frames and receive
// buffers whose bytes this connection holds are given back through release,
// which returns them only after the pending bytes are written.
//
// If the first bytes written are not HTTP/2's client preface (transport
// security sits between gRPC and this connection), the write fails with
// errNotPlain, and the transport dials its links with gRPC's write buffer
// from then on.
type sendConn struct {
	*net.TCPConn

	notPlain func()

	mu   sync.Mutex
	mode uint8 // connPreface, connH2 or connRaw
	pre  int   // bytes of the preface seen

	hdr     [9]byte // frame header being read
	nh      int
	left    int // payload bytes left in the current frame
	typ     uint8
	flags   uint8
	stream  uint32
	msgEnd  bool // a gRPC message ended in the current frame
	streams map[uint32]*msgState

	bufs    net.Buffers // pending: copies (from arena) and references
	arena   []byte      // copies of small writes
	tail    bool        // the last of bufs ends at the end of arena
	pending int
	err     error
	dead    chan struct{} // closed when err is set: nothing is read anymore

	// rel guards what was released while bytes were pending, apart from
	// c.mu, which a blocked write holds.
	rel    sync.Mutex
	held   bool         // bytes are pending or being written
	frames []*Frame     // released once bufs are written
	parts  []mem.Buffer // likewise
}

const (
	connPreface = iota // the client preface is being written
	connH2             // HTTP/2 frames follow
	connRaw            // not HTTP/2 in the clear: writes fail
)

const (
	h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	// refMin is the smallest write kept by reference rather than copied.
	refMin = 4 << 10
	// flushAt bounds the bytes held before a write, as gRPC's buffer did.
	flushAt = 512 << 10
	// http2 frame types and flags used here
	frameData      = 0
	frameRST       = 3
	flagEndStream  = 0x1
	flagPadded     = 0x8
	grpcPrefixSize = 5
)

// msgState follows the gRPC messages (5-byte prefix, then the message) in
// one stream's DATA payloads.
type msgState struct {
	prefix [grpcPrefixSize]byte
	np     int
	left   int
	lost   bool // the framing could not be followed (padding): flush per frame
}

// newSendConn wraps c; notPlain is called if what is written to it turns
// out not to be HTTP/2 in the clear (the write then fails with errNotPlain).
func newSendConn(c *net.TCPConn, notPlain func()) *sendConn {
	return &sendConn{TCPConn: c, notPlain: notPlain, streams: make(map[uint32]*msgState), arena: make([]byte, 0, 4<<10),
		dead: make(chan struct{})}
}

// fail records the connection's error, with c.mu held: from then on Write
// reads nothing it is given.
func (c *sendConn) fail(err error) {
	if c.err == nil {
		c.err = err
		close(c.dead)
	}
}

// errAbandoned is what a sendConn answers once abandoned.
var errAbandoned = errors.New("connection abandoned: the ring took its data back")

// abandon closes the connection so that no byte handed to Write is read
// afterwards (see shut).
func (c *sendConn) abandon() { c.shut(errAbandoned) }

// Close implements net.Conn. gRPC closes the connection when its transport
// fails (the peer died, say): the messages it still holds are then never
// written, and the links' views count as given back at once.
func (c *sendConn) Close() error { return c.shut(net.ErrClosed) }

// shut closes the connection so that no byte handed to Write is read
// afterwards, by this connection or the kernel: closing the socket wakes a
// write blocked on a peer that does not read and waits for it to return,
// and err, set under the lock, then keeps Write from reading anything
// more. What was pending is dropped and given back.
func (c *sendConn) shut(err error) error {
	cerr := c.TCPConn.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fail(err)
	clear(c.bufs)
	c.bufs, c.arena, c.tail, c.pending = c.bufs[:0], c.arena[:0], false, 0
	c.giveBack()
	return cerr
}

// Write implements net.Conn.
func (c *sendConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	n := len(b)
	for len(b) > 0 {
		switch {
		case c.mode == connPreface:
			k := min(len(b), len(h2Preface)-c.pre)
			if string(b[:k]) != h2Preface[c.pre:c.pre+k] {
				// Not HTTP/2 in the clear (a TLS handshake): without
				// gRPC's write buffer every frame header would be a
				// record of its own. Fail; the link is dialed again
				// with the buffer.
				c.mode = connRaw
				c.fail(errNotPlain)
				c.notPlain()
				return 0, c.err
			}
			c.copyIn(b[:k])
			b = b[k:]
			if c.pre += k; c.pre == len(h2Preface) {
				c.mode = connH2
			}
		case c.nh < len(c.hdr):
			k := copy(c.hdr[c.nh:], b)
			c.copyIn(b[:k])
			b = b[k:]
			if c.nh += k; c.nh == len(c.hdr) {
				c.left = int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
				c.typ, c.flags = c.hdr[3], c.hdr[4]
				c.stream = binary.BigEndian.Uint32(c.hdr[5:]) & (1<<31 - 1)
				c.msgEnd = false
				if c.left == 0 {
					if err := c.frameDone(); err != nil {
						return 0, err
					}
				}
			}
		default:
			k := min(c.left, len(b))
			p := b[:k]
			b = b[k:]
			if c.typ == frameData {
				c.scan(p)
				if len(p) >= refMin {
					c.hold()
					c.bufs = append(c.bufs, p)
					c.tail = false
					c.pending += len(p)
				} else {
					c.copyIn(p)
				}
			} else {
				c.copyIn(p)
			}
			if c.left -= k; c.left == 0 {
				if err := c.frameDone(); err != nil {
					return 0, err
				}
			}
		}
	}
	if c.pending >= flushAt {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// copyIn appends a copy of p to what is pending.
func (c *sendConn) copyIn(p []byte) {
	if len(p) == 0 {
		return
	}
	c.hold()
	at := len(c.arena)
	if cap(c.arena)-at < len(p) {
		// Earlier pieces keep the old array; start a new one.
		c.arena = make([]byte, 0, max(2*cap(c.arena), len(p)))
		at = 0
		c.tail = false
	}
	c.arena = append(c.arena, p...)
	if c.tail {
		last := &c.bufs[len(c.bufs)-1]
		*last = (*last)[:len(*last)+len(p)]
	} else {
		c.bufs = append(c.bufs, c.arena[at:at+len(p)])
		c.tail = true
	}
	c.pending += len(p)
}

// scan follows the gRPC message framing through a piece of a DATA payload.
func (c *sendConn) scan(p []byte) {
	s := c.streams[c.stream]
	if s == nil {
		s = &msgState{}
		c.streams[c.stream] = s
	}
	if c.flags&flagPadded != 0 {
		s.lost = true
	}
	if s.lost {
		return
	}
	for len(p) > 0 {
		if s.np < grpcPrefixSize {
			k := copy(s.prefix[s.np:], p)
			p = p[k:]
			if s.np += k; s.np == grpcPrefixSize {
				s.left = int(binary.BigEndian.Uint32(s.prefix[1:]))
				if s.left == 0 {
					s.np, c.msgEnd = 0, true
				}
			}
			continue
		}
		k := min(s.left, len(p))
		p = p[k:]
		if s.left -= k; s.left == 0 {
			s.np, c.msgEnd = 0, true
		}
	}
}

// frameDone ends the current frame and writes what is pending unless the
// frame is the middle of a gRPC message.
func (c *sendConn) frameDone() error {
	c.nh = 0
	hold := c.typ == frameData && !c.msgEnd && c.flags&flagEndStream == 0
	if s := c.streams[c.stream]; s != nil && s.lost {
		hold = false
	}
	if c.typ == frameRST || (c.typ == frameData && c.flags&flagEndStream != 0) {
		delete(c.streams, c.stream)
	}
	if hold {
		return nil
	}
	return c.flush()
}

// flush writes what is pending and gives back what it referenced.
func (c *sendConn) flush() error {
	if len(c.bufs) > 0 {
		bufs := c.bufs
		wireWritten(bufs) // before the peer can read the bytes
		_, err := bufs.WriteTo(c.TCPConn)
		clear(c.bufs)
		c.bufs, c.arena, c.tail, c.pending = c.bufs[:0], c.arena[:0], false, 0
		if err != nil {
			c.fail(err)
			// The buffers are no longer read; they may go back.
		}
	}
	c.giveBack()
	return c.err
}

// giveBack returns what was released while its bytes were pending; c.mu is
// held and nothing is pending anymore.
func (c *sendConn) giveBack() {
	c.rel.Lock()
	defer c.rel.Unlock()
	c.held = false
	for i, f := range c.frames {
		f.Release()
		c.frames[i] = nil
	}
	for i, b := range c.parts {
		b.Free()
		c.parts[i] = nil
	}
	c.frames, c.parts = c.frames[:0], c.parts[:0]
}

// hold records, with c.mu held and before bytes are added to bufs, that
// bytes are pending: buffers released from now on wait for the next flush.
func (c *sendConn) hold() {
	if len(c.bufs) == 0 {
		c.rel.Lock()
		c.held = true
		c.rel.Unlock()
	}
}

// releaseFrame gives f back to its pool once nothing pending refers to it.
// It does not wait for c.mu, which a write blocked on a peer that does not
// read may hold indefinitely (gRPC frees a message from the sender's
// goroutine when its stream fails).
func (c *sendConn) releaseFrame(f *Frame) {
	c.rel.Lock()
	if c.held {
		c.frames = append(c.frames, f)
		c.rel.Unlock()
		return
	}
	c.rel.Unlock()
	f.Release()
}

// releasePart frees a receive buffer (or gives back a view) once nothing
// pending refers to it.
func (c *sendConn) releasePart(b mem.Buffer) {
	c.rel.Lock()
	if c.held {
		c.parts = append(c.parts, b)
		c.rel.Unlock()
		return
	}
	c.rel.Unlock()
	b.Free()
}
