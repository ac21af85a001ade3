package allreduce

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// TestRetainDoesNotWaitForACutOffPeer: dropping the link to a member that
// left must not wait for it. gRPC's ClientConn.Close waits up to 5 s for
// its writer to send a GOAWAY, and a writer blocked on a peer that a
// partition cut off never does; in the chaos run the new ring's first step
// waited those 5 s in Retain. The peer here sits behind a proxy that stops
// reading, as a partition would.
func TestRetainDoesNotWaitForACutOffPeer(t *testing.T) {
	srv, stop, err := ListenGRPC("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Close(); stop() }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var frozen atomic.Bool
	thaw := make(chan struct{})
	defer close(thaw)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("tcp", srv.Addr())
			if err != nil {
				c.Close()
				return
			}
			go io.Copy(c, d)
			go func() { // client to server, until the cut
				defer d.Close()
				defer c.Close()
				buf := make([]byte, 32<<10)
				for {
					if frozen.Load() {
						<-thaw
						return
					}
					n, err := c.Read(buf)
					if n > 0 {
						d.Write(buf[:n])
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	cli, stopCli, err := ListenGRPC("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cli.Close(); stopCli() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, err := cli.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	frozen.Store(true)
	go func() {
		for range 8 {
			if l.Send(ctx, &Frame{Buf: make([]byte, 4<<20)}) != nil {
				return
			}
		}
	}()
	time.Sleep(500 * time.Millisecond) // the socket buffers fill; gRPC's writer blocks
	done := make(chan struct{})
	go func() { cli.Retain(nil); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Retain waited for a peer cut off by a partition")
	}
}
