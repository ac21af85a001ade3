package allreduce

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TestGRPCSums runs the ring over real gRPC streams on 127.0.0.1, every
// codec, with and without checksums, several steps on the same streams.
// Messages of 64 KiB and more keep their payload in gRPC's receive buffers
// (split at arbitrary byte offsets) and are forwarded from there; smaller
// ones are copied out: the cases cover both.
func TestGRPCSums(t *testing.T) {
	cases := []struct {
		n, length int
		codec     string
		chunk     int // KiB of fp32 per message
		checksum  bool
	}{
		{1, 1000, CodecNone, 64, false},
		{2, 0, CodecNone, 64, true},
		{2, 1, CodecNone, 64, false},
		{3, 2, CodecNone, 64, true},
		{3, 1_000_003, CodecNone, 64, false},
		{3, 1_000_003, CodecNone, 512, true},
		{4, 65_537, CodecBF16, 64, false},
		{3, 400_009, CodecBF16, 512, true},
		{4, 65_537, CodecBF16Zstd, 64, true},
		{2, 400_009, CodecBF16Zstd, 1024, false},
		{5, 65_537, CodecInt8, 64, false},
		{3, 400_009, CodecInt8, 1024, true},
		{8, 7919, CodecNone, 64, false},
	}
	for _, tc := range cases {
		if tc.length > 100_000 && (raceEnabled || testing.Short()) {
			tc.length = 100_003
		}
		t.Run(fmt.Sprintf("%s/n%d/len%d/chunk%dk/crc=%v", tc.codec, tc.n, tc.length, tc.chunk, tc.checksum), func(t *testing.T) {
			c := newGRPCCluster(t, tc.n, tc.length, Config{Codec: tc.codec, BucketBytes: 4 * 400_000,
				ChunkBytes: tc.chunk << 10, Checksum: tc.checksum})
			for step := range uint64(2) {
				xs := inputs(tc.n, tc.length, step+uint64(tc.length))
				want := ringSum(xs, c.rs[0].Buckets())
				_, abs := exactSum(xs)
				lim := bound(tc.codec, tc.n, abs)
				for i, err := range c.allreduce(1, step, xs) {
					if err != nil {
						t.Fatalf("step %d member %d: %v", step, i, err)
					}
				}
				for r := range xs {
					for i := range want {
						if tc.codec == CodecNone && math.Float32bits(xs[r][i]) != math.Float32bits(want[i]) {
							t.Fatalf("member %d element %d: got %v want %v", r, i, xs[r][i], want[i])
						}
						if d := math.Abs(float64(xs[r][i] - want[i])); d > 2*lim[i] {
							t.Fatalf("member %d element %d: got %v want about %v", r, i, xs[r][i], want[i])
						}
						if xs[r][i] != xs[0][i] {
							t.Fatalf("element %d differs between members 0 and %d", i, r)
						}
					}
				}
			}
			if tc.n > 1 && tc.length > 0 && c.rs[0].Stats().SentBytes == 0 {
				t.Error("no bytes counted as sent")
			}
			// Views are lent for codec none's chunks of viewMin bytes or more.
			lends := c.rs[0].loans.lends
			if big := 4*tc.length/tc.n >= 2*viewMin; tc.n > 1 && (lends > 0) != (tc.codec == CodecNone && big) {
				t.Errorf("codec %s, %d elements over %d members: member 0 lent %d views of its gradient", tc.codec, tc.length, tc.n, lends)
			}
		})
	}
}

// TestGRPCCloseDelivers: a member that finishes first and closes its
// transport at once must not cut off what its neighbour still has to
// receive (gRPC writes sent messages asynchronously).
func TestGRPCCloseDelivers(t *testing.T) {
	for k := range 6 {
		n, length := 3, 300_000
		if k%2 == 1 {
			n, length = 4, 1
		}
		c := newGRPCCluster(t, n, length, Config{ChunkBytes: 64 << 10})
		xs := inputs(n, length, uint64(k))
		want := ringSum(xs, c.rs[0].Buckets())
		for range 2 {
			want = ringSum([][]float32{want, want, want, want}[:n], c.rs[0].Buckets())
		}
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i, r := range c.rs {
			wg.Go(func() {
				for step := range uint64(3) {
					if errs[i] = r.Allreduce(context.Background(), c.gen[i], step, xs[i]); errs[i] != nil {
						break
					}
				}
				c.ts[i].Close()
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d member %d: %v", k, i, err)
			}
		}
		for i := range want {
			if xs[2][i] != want[i] {
				t.Fatalf("round %d element %d: got %v want %v", k, i, xs[2][i], want[i])
			}
		}
	}
}

// TestRetainClosesLeftMembers: when a ring continues without a member, the
// first step of the new generation closes the link to it (its stream ends)
// and keeps the links to the members that stay.
func TestRetainClosesLeftMembers(t *testing.T) {
	c := newGRPCCluster(t, 3, 70_000, Config{ChunkBytes: 64 << 10})
	xs := inputs(3, 70_000, 7)
	for i, err := range c.allreduce(1, 0, xs) {
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
	}
	// Member 2 leaves: members 0 and 1 form generation 2. Member 1's right
	// neighbour was member 2; its link there must go.
	t1 := c.ts[1].(*GRPCTransport)
	if !hasLink(t1, c.ts[2].Addr()) {
		t.Fatal("member 1 has no link to member 2 after a step")
	}
	members := c.gen[0].Members[:2]
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			errs[i] = c.rs[i].Allreduce(context.Background(), Generation{ID: 2, Members: members, Rank: i}, 1, xs[i])
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("generation 2, member %d: %v", i, err)
		}
	}
	if hasLink(t1, c.ts[2].Addr()) {
		t.Error("member 1 still holds a link to member 2, which left")
	}
	if !hasLink(t1, c.ts[0].Addr()) {
		t.Error("member 1 lost its link to member 0, which stayed")
	}
	// Member 2 sees the stream from member 1 end.
	select {
	case f := <-c.ts[2].Inbox():
		if f.Err == nil || f.Peer != t1.Addr() {
			t.Errorf("member 2 got %+v, want the end of member 1's stream", f)
		}
		f.Release()
	case <-time.After(10 * time.Second):
		t.Error("member 2 never saw member 1's stream end")
	}
}

func hasLink(t *GRPCTransport, addr string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.links[addr]
	return l != nil && !l.broken.Load()
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	c, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// h2Frame returns an HTTP/2 frame header.
func h2Frame(length int, typ, flags byte, stream uint32) []byte {
	return []byte{byte(length >> 16), byte(length >> 8), byte(length), typ, flags,
		byte(stream >> 24), byte(stream >> 16), byte(stream >> 8), byte(stream)}
}

// TestSendConnGathers writes to a sendConn what gRPC writes (the preface, a
// settings frame, a gRPC message cut into DATA frames, its header split
// across writes) and checks when it goes out: control frames at once, a
// message when it ends, nothing held once a message or frame is complete;
// that the peer receives the bytes unchanged; and that frames released while
// their bytes are pending go back to their pool only once written.
func TestSendConnGathers(t *testing.T) {
	cli, srv := tcpPair(t)
	c := newSendConn(cli, func() { t.Error("plain HTTP/2 taken for transport security") })
	var sent []byte
	write := func(b []byte) {
		t.Helper()
		if n, err := c.Write(b); err != nil || n != len(b) {
			t.Fatalf("write %d bytes: %d, %v", len(b), n, err)
		}
		sent = append(sent, b...)
	}
	held := func() int { c.mu.Lock(); defer c.mu.Unlock(); return c.pending }

	write([]byte(h2Preface[:10]))
	write([]byte(h2Preface[10:]))
	write(append(h2Frame(6, 4, 0, 0), 0, 3, 0, 0, 0, 100)) // SETTINGS
	if h := held(); h != 0 {
		t.Fatalf("%d bytes held after a settings frame", h)
	}
	// One gRPC message of 40,000 bytes on stream 1: DATA frames of 16384,
	// 16384 and 7237 payload bytes (the 5-byte prefix in the first).
	msg := make([]byte, 5+40_000)
	msg[1], msg[2], msg[3], msg[4] = 0, 0, 0x9c, 0x40
	for i := 5; i < len(msg); i++ {
		msg[i] = byte(i * 7)
	}
	var pool Pool
	f := pool.Get(64)
	for k, at := 0, 0; at < len(msg); k++ {
		n := min(16384, len(msg)-at)
		hdr := h2Frame(n, frameData, 0, 1)
		write(hdr[:4]) // a header split across writes
		write(hdr[4:])
		write(msg[at : at+5])
		write(msg[at+5 : at+n])
		at += n
		if at < len(msg) {
			if held() == 0 {
				t.Fatalf("DATA frame %d, in the middle of a message, was written at once", k)
			}
			if k == 0 {
				c.releaseFrame(f)
				if len(pool.free) != 0 {
					t.Fatal("a frame went back to its pool while bytes were pending")
				}
			}
		}
	}
	if h := held(); h != 0 {
		t.Fatalf("%d bytes held after the message ended", h)
	}
	if len(pool.free) != 1 {
		t.Fatalf("%d frames back in the pool after the write, want 1", len(pool.free))
	}
	c.releaseFrame(pool.Get(64)) // nothing pending: at once
	if len(pool.free) != 1 {
		t.Fatal("a frame released with nothing pending did not go back at once")
	}
	// A padded DATA frame: the message framing is lost for the stream, and
	// every frame goes out as it ends.
	write(append(h2Frame(5, frameData, flagPadded, 3), 2, 'a', 'b', 0, 0))
	if h := held(); h != 0 {
		t.Fatalf("%d bytes held after a padded frame", h)
	}
	got := make([]byte, len(sent))
	if _, err := io.ReadFull(srv, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, sent) {
		t.Fatal("the peer received other bytes than were written")
	}
}

// TestSendConnRefusesTLS: a sendConn under transport security fails its first
// write and says so, so that the link is dialed again with a write buffer.
func TestSendConnRefusesTLS(t *testing.T) {
	cli, _ := tcpPair(t)
	told := false
	c := newSendConn(cli, func() { told = true })
	if _, err := c.Write([]byte{0x16, 3, 1, 0, 0x2f}); !errors.Is(err, errNotPlain) || !told {
		t.Fatalf("write of a TLS record: %v (told %v)", err, told)
	}
}

// TestGRPCOverTLS runs the ring over gRPC with transport security: the
// first link finds that its connection is not HTTP/2 in the clear and the
// transport dials it, and every later link, with gRPC's write buffer.
func TestGRPCOverTLS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ring"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	srvCreds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	cliCreds := credentials.NewTLS(&tls.Config{RootCAs: roots})
	const n, length = 3, 200_003
	var ts []Transport
	for range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		tr := NewGRPC(lis.Addr().String(), grpc.WithTransportCredentials(cliCreds))
		s := grpc.NewServer(append(ServerOptions(), grpc.Creds(srvCreds))...)
		tr.Register(s)
		go s.Serve(lis)
		t.Cleanup(func() { tr.Close(); s.Stop() })
		ts = append(ts, tr)
	}
	c := newCluster(t, ts, length, Config{ChunkBytes: 64 << 10})
	for step := range uint64(2) {
		xs := inputs(n, length, step)
		want := ringSum(xs, c.rs[0].Buckets())
		for i, err := range c.allreduce(1, step, xs) {
			if err != nil {
				t.Fatalf("step %d member %d: %v", step, i, err)
			}
		}
		for r := range xs {
			for i := range want {
				if math.Float32bits(xs[r][i]) != math.Float32bits(want[i]) {
					t.Fatalf("step %d member %d element %d: got %v want %v", step, r, i, xs[r][i], want[i])
				}
			}
		}
	}
	for i, tr := range ts {
		if !tr.(*GRPCTransport).secure.Load() {
			t.Errorf("member %d never found its connection secured", i)
		}
		// gRPC copies a message into its write buffer after Send returns
		// and may never give back one queued on a broken connection: no
		// views over such links (zerocopy.go).
		if c.rs[i].loans.lends != 0 {
			t.Errorf("member %d lent views of its gradient over transport security", i)
		}
	}
}

// FuzzSendConn writes the HTTP/2 preface and arbitrary bytes, cut into
// writes at arbitrary places, through a sendConn: whatever the framing it
// reads, it must not panic, and once what it holds is written the peer must
// have received exactly the bytes written, in order.
func FuzzSendConn(f *testing.F) {
	msg := append(h2Frame(20, frameData, 0, 1), 0, 0, 0, 0, 15)
	msg = append(msg, make([]byte, 15)...)
	f.Add(append(append(h2Frame(0, 4, 1, 0), msg...), h2Frame(0, frameData, flagEndStream, 1)...), []byte{3, 9, 1})
	f.Add(append(h2Frame(5000, frameData, 0, 3), make([]byte, 5000)...), []byte{200, 17})
	f.Add(append(h2Frame(3, frameData, flagPadded, 5), 1, 2, 3), []byte{})
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		cli, srv := tcpPair(t)
		c := newSendConn(cli, func() { t.Error("the preface taken for transport security") })
		in := append([]byte(h2Preface), data...)
		got := make(chan []byte, 1)
		go func() { b, _ := io.ReadAll(srv); got <- b }()
		rest := in
		for i := 0; len(rest) > 0; i++ {
			k := len(rest)
			if i < len(cuts) {
				k = min(k, int(cuts[i])*64+1)
			}
			if n, err := c.Write(rest[:k]); err != nil || n != k {
				t.Fatalf("write: %d of %d, %v", n, k, err)
			}
			rest = rest[k:]
		}
		c.mu.Lock()
		err := c.flush()
		c.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		cli.CloseWrite()
		if b := <-got; !bytes.Equal(b, in) {
			t.Fatalf("the peer received %d bytes, %d were written, or other bytes", len(b), len(in))
		}
	})
}
