package shard

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"google.golang.org/grpc"
)

// flightDataset writes a one-shard dataset of n sequences and serves it.
func flightDataset(t testing.TB, meta Meta, n int) (dir, addr string, m *Manifest) {
	t.Helper()
	dir = t.TempDir()
	_, info, _ := writeShard(t, dir, "train-00000.arrow", meta, n)
	info.Split = "train"
	m = &Manifest{Version: Version, Tokenizer: meta.Tokenizer, Vocab: meta.Vocab, SeqLen: meta.SeqLen, Shards: []Info{info}}
	if err := WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	fs := RegisterFlight(s, dir)
	go s.Serve(lis)
	t.Cleanup(func() { s.Stop(); fs.Close() })
	return dir, lis.Addr().String(), m
}

func TestFlightFetch(t *testing.T) {
	for _, meta := range []Meta{testMeta(260), testMeta(131072), {SeqLen: 7, Vocab: 300, Tokenizer: "t", BatchRows: 1}} {
		dir, addr, m := flightDataset(t, meta, 23)
		c, err := DialFlight(addr)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Manifest(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got.Shards[0] != m.Shards[0] {
			t.Fatalf("manifest from the peer: %+v, want %+v", got.Shards[0], m.Shards[0])
		}
		dst := t.TempDir()
		if err := c.Fetch(context.Background(), got, got.Shards[0], dst); err != nil {
			t.Fatal(err)
		}
		a, _ := os.ReadFile(filepath.Join(dir, "train-00000.arrow"))
		b, _ := os.ReadFile(filepath.Join(dst, "train-00000.arrow"))
		if string(a) != string(b) {
			t.Fatal("fetched shard differs from the original")
		}
		// A shard the peer does not list is a clear, permanent error.
		missing := got.Shards[0]
		missing.Name = "train-00001.arrow"
		if err := c.Fetch(context.Background(), got, missing, dst); err == nil || !strings.Contains(err.Error(), "no shard") {
			t.Fatalf("fetch of an unknown shard: %v", err)
		}
		c.Close()
	}
}

// BenchmarkFlightFetch streams a 16 MiB shard over loopback per iteration.
func BenchmarkFlightFetch(b *testing.B) {
	meta := Meta{SeqLen: 256, Vocab: 260, Tokenizer: "bytes", BatchRows: DefaultBatchRows(256, 2)}
	_, addr, m := flightDataset(b, meta, 32768)
	c, err := DialFlight(addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	dst := b.TempDir()
	b.SetBytes(m.Shards[0].Bytes)
	for b.Loop() {
		if err := c.Fetch(context.Background(), m, m.Shards[0], dst); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRead measures random sequence reads from a mapped shard.
func BenchmarkRead(b *testing.B) {
	meta := Meta{SeqLen: 256, Vocab: 260, Tokenizer: "bytes", BatchRows: DefaultBatchRows(256, 2)}
	p, info, _ := writeShard(b, b.TempDir(), "a.arrow", meta, 8192)
	r, err := Open(p, Expect{Sequences: info.Sequences})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	dst := make([]int32, 256)
	i := int64(0)
	b.SetBytes(256 * 2)
	for b.Loop() {
		i = (i*1103515245 + 12345) & (1<<31 - 1)
		if err := r.Read(i%r.Len(), dst); err != nil {
			b.Fatal(err)
		}
	}
}

func TestFlightFetchRows(t *testing.T) {
	meta := testMeta(260)
	dir, addr, m := flightDataset(t, meta, 23)
	r, err := Open(filepath.Join(dir, "train-00000.arrow"), m.Expect(m.Shards[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, err := DialFlight(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, rg := range [][2]int64{{0, 1}, {4, 7}, {22, 23}, {0, 23}} {
		got, err := c.FetchRows(context.Background(), m, m.Shards[0], rg[0], rg[1])
		if err != nil {
			t.Fatal(err)
		}
		want := make([]int32, meta.SeqLen)
		for i := rg[0]; i < rg[1]; i++ {
			r.Read(i, want)
			off := int(i-rg[0]) * meta.SeqLen
			for j := range want {
				if got[off+j] != want[j] {
					t.Fatalf("rows %v: row %d differs", rg, i)
				}
			}
		}
	}
	for _, rg := range [][2]int64{{-1, 2}, {3, 3}, {20, 24}} {
		if _, err := c.FetchRows(context.Background(), m, m.Shards[0], rg[0], rg[1]); err == nil {
			t.Fatalf("rows %v accepted", rg)
		}
	}
}

func TestParseTicket(t *testing.T) {
	for _, tc := range []struct {
		in    string
		whole bool
		ok    bool
	}{
		{"train-00000.arrow", true, true},
		{"train-00000.arrow:0:10", false, true},
		{"a:1", false, false},
		{"a:5:5", false, false},
		{"a:-1:5", false, false},
		{"a:0:5000", false, false},
		{"a:x:5", false, false},
	} {
		_, _, _, whole, err := parseTicket([]byte(tc.in))
		if (err == nil) != tc.ok || (tc.ok && whole != tc.whole) {
			t.Errorf("parseTicket(%q): whole %v, err %v", tc.in, whole, err)
		}
	}
}

// fakeStream replays Flight data messages.
type fakeStream []*flight.FlightData

func (f *fakeStream) Recv() (*flight.FlightData, error) {
	if len(*f) == 0 {
		return nil, io.EOF
	}
	d := (*f)[0]
	*f = (*f)[1:]
	return d, nil
}

// recordStream captures the Flight messages a server sends for rows.
type recordStream struct {
	grpc.ServerStream
	msgs []*flight.FlightData
}

func (r *recordStream) Send(d *flight.FlightData) error { r.msgs = append(r.msgs, d); return nil }
func (r *recordStream) Context() context.Context        { return context.Background() }

// FuzzFlightRows feeds a peer's row-range stream, its messages (header and
// body) mutated, to the client's decoder.
func FuzzFlightRows(f *testing.F) {
	meta := testMeta(260)
	p, info, _ := writeShard(f, f.TempDir(), "a.arrow", meta, 9)
	r, err := Open(p, Expect{Sequences: info.Sequences})
	if err != nil {
		f.Fatal(err)
	}
	defer r.Close()
	var rs recordStream
	if err := sendRows(&rs, r, 2, 5); err != nil {
		f.Fatal(err)
	}
	if len(rs.msgs) != 2 {
		f.Fatalf("%d messages, want schema and one batch", len(rs.msgs))
	}
	f.Add(rs.msgs[0].DataHeader, rs.msgs[1].DataHeader, rs.msgs[1].DataBody)
	f.Fuzz(func(t *testing.T, schema, header, body []byte) {
		s := fakeStream{{DataHeader: schema}, {DataHeader: header, DataBody: body}}
		out, err := decodeRows(&s, Expect{SeqLen: 16, Vocab: 260}, 3)
		if err != nil {
			return
		}
		if len(out) != 3*16 {
			t.Fatalf("%d tokens for 3 rows of 16", len(out))
		}
		for _, tok := range out {
			if tok < 0 || tok >= 260 {
				t.Fatalf("token %d accepted", tok)
			}
		}
	})
}

func FuzzParseTicket(f *testing.F) {
	f.Add([]byte("train-00000.arrow"))
	f.Add([]byte("train-00000.arrow:3:9"))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, lo, hi, whole, err := parseTicket(b)
		if err == nil && !whole && (lo < 0 || hi <= lo || hi-lo > maxRowsTicket || strings.Contains(name, ":")) {
			t.Fatalf("parseTicket(%q) accepted rows [%d, %d) of %q", b, lo, hi, name)
		}
	})
}
