package dataset

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/difftrain/difftrain/shard"
)

// prepared returns a private copy of a small dataset, written once per
// test binary.
func prepared(t *testing.T) string {
	t.Helper()
	once.Do(func() {
		base, err := os.MkdirTemp("", "dataset-test-")
		if err != nil {
			onceErr = err
			return
		}
		shared = base
		root, _ := corpusAt(t, filepath.Join(base, "corpus"))
		_, onceErr = Prepare(context.Background(), PrepareOptions{Inputs: []string{root}, Out: filepath.Join(base, "out"), SeqLen: 32, ValFraction: 0.1, ShardMB: 0.02, Workers: 2})
	})
	if onceErr != nil {
		t.Fatal(onceErr)
	}
	out := t.TempDir()
	ents, err := os.ReadDir(filepath.Join(shared, "out"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(shared, "out", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

var (
	once    sync.Once
	onceErr error
	shared  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != "" {
		os.RemoveAll(shared)
	}
	os.Exit(code)
}

func drain(t *testing.T, src Source, from, to int64) [][]int32 {
	t.Helper()
	var out [][]int32
	for k := from; k < to; k++ {
		dst := make([]int32, src.SeqLen())
		if err := src.Sample(k, dst); err != nil {
			t.Fatalf("Sample(%d): %v", k, err)
		}
		out = append(out, dst)
	}
	return out
}

func TestLoaderLocal(t *testing.T) {
	dir := prepared(t)
	l, err := Open(context.Background(), Options{Dir: dir, Seed: 7, Cache: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	seqs := readSplit(t, dir, SplitTrain)
	if l.Len() != int64(len(seqs)) || l.SeqLen() != 32 || l.Vocab() != 260 {
		t.Fatalf("Len %d SeqLen %d Vocab %d; want %d, 32, 260", l.Len(), l.SeqLen(), l.Vocab(), len(seqs))
	}
	mem, err := NewMemory(seqs, 260, 7)
	if err != nil {
		t.Fatal(err)
	}
	n := l.Len()
	// Two epochs and a bit: the Loader serves what Memory serves.
	want := drain(t, mem, 0, 2*n+5)
	// Prefetch the first half ahead; the rest is read on demand.
	l.Prefetch(0, 32)
	deadline := time.Now().Add(5 * time.Second)
	for l.pf.cached() < 32 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	got := drain(t, l, 0, 2*n+5)
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatal("Loader and Memory serve different sequences")
	}
	if st := l.Stats(); st.Hits < 32 || st.Misses == 0 {
		t.Fatalf("stats %+v: want 32 prefetch hits and some misses", st)
	}
	// Epoch 1 is a different order.
	if slices.EqualFunc(got[:n], got[n:2*n], slices.Equal) {
		t.Fatal("epochs 0 and 1 have the same order")
	}
	// The val split is separate.
	v, err := Open(context.Background(), Options{Dir: dir, Split: SplitVal})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if v.Len() == 0 || v.Len() == l.Len() {
		t.Fatalf("val split has %d sequences", v.Len())
	}
}

// TestLoaderResume: a fresh Loader (a restarted process) given the saved
// cursor continues the identical order.
func TestLoaderResume(t *testing.T) {
	dir := prepared(t)
	a, err := Open(context.Background(), Options{Dir: dir, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	full := drain(t, a, 0, 300)
	a.Close()
	b, err := Open(context.Background(), Options{Dir: dir, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const cursor = 123
	if !slices.EqualFunc(drain(t, b, cursor, 300), full[cursor:], slices.Equal) {
		t.Fatal("resumed Loader serves a different order")
	}
}

func TestLoaderBadDataset(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(t *testing.T, dir string, m *shard.Manifest)
		err    string
	}{
		{"missing shard", func(t *testing.T, dir string, m *shard.Manifest) {
			os.Remove(filepath.Join(dir, m.Shards[1].Name))
		}, "no such file"},
		{"checksum mismatch", func(t *testing.T, dir string, m *shard.Manifest) {
			p := filepath.Join(dir, m.Shards[0].Name)
			b, _ := os.ReadFile(p)
			b[len(b)/2] ^= 0x40
			os.WriteFile(p, b, 0o644)
		}, "checksum mismatch"},
		{"truncated shard", func(t *testing.T, dir string, m *shard.Manifest) {
			p := filepath.Join(dir, m.Shards[0].Name)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-7], 0o644)
		}, "manifest says"},
		{"no manifest", func(t *testing.T, dir string, m *shard.Manifest) {
			os.Remove(filepath.Join(dir, shard.ManifestName))
		}, "manifest.json"},
		{"bad manifest", func(t *testing.T, dir string, m *shard.Manifest) {
			os.WriteFile(filepath.Join(dir, shard.ManifestName), []byte(`{"version": 1,`), 0o644)
		}, "manifest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := prepared(t)
			m, err := shard.ReadManifest(dir)
			if err != nil {
				t.Fatal(err)
			}
			tc.break_(t, dir, m)
			l, err := Open(context.Background(), Options{Dir: dir})
			if err == nil {
				l.Close()
				t.Fatal("Open accepted a broken dataset")
			}
			if !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %q, want one containing %q", err, tc.err)
			}
		})
	}
	if _, err := Open(context.Background(), Options{Dir: prepared(t), Split: "test"}); err == nil || !strings.Contains(err.Error(), `no shards in split "test"`) {
		t.Fatalf("missing split: %v", err)
	}
}

// serveFlight starts a gRPC server on 127.0.0.1 hosting the Flight service
// for dir and returns its address.
func serveFlight(t *testing.T, dir string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	fs := shard.RegisterFlight(s, dir)
	go s.Serve(lis)
	t.Cleanup(func() { s.Stop(); fs.Close() })
	return lis.Addr().String()
}

// TestLoaderPeer: a node with an empty data directory trains from a peer's
// Flight server and receives byte-identical sequences and shard files; it
// then serves its copy to a third node.
func TestLoaderPeer(t *testing.T) {
	dir := prepared(t)
	local, err := Open(context.Background(), Options{Dir: dir, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	want := drain(t, local, 0, local.Len()+10)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	empty := t.TempDir()
	peer, err := Open(ctx, Options{Dir: empty, Peer: serveFlight(t, dir), Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peer.Prefetch(0, 16)
	if got := drain(t, peer, 0, local.Len()+10); !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatal("sequences from the peer differ from the local ones")
	}
	if err := peer.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, dir, empty, peer.Manifest())

	// The copy is served onward.
	third := t.TempDir()
	c, err := Open(ctx, Options{Dir: third, Peer: serveFlight(t, empty), Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := drain(t, c, 0, local.Len()+10); !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatal("sequences relayed through a second peer differ")
	}
}

func sameFiles(t *testing.T, a, b string, m *shard.Manifest) {
	t.Helper()
	for _, s := range m.Split(SplitTrain) {
		x, _ := os.ReadFile(filepath.Join(a, s.Name))
		y, err := os.ReadFile(filepath.Join(b, s.Name))
		if err != nil || !bytes.Equal(x, y) {
			t.Fatalf("shard %s: copy differs from the original (%v)", s.Name, err)
		}
	}
}

func TestLoaderPeerErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A peer with no dataset.
	_, err := Open(ctx, Options{Dir: t.TempDir(), Peer: serveFlight(t, t.TempDir())})
	if err == nil || !strings.Contains(err.Error(), "no dataset manifest") {
		t.Fatalf("peer without data: %v", err)
	}
	// A peer whose shard is corrupt: the fetch fails with a clear error.
	dir := prepared(t)
	m, _ := shard.ReadManifest(dir)
	p := filepath.Join(dir, m.Shards[0].Name)
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 0x40
	os.WriteFile(p, b, 0o644)
	l, err := Open(ctx, Options{Dir: t.TempDir(), Peer: serveFlight(t, dir), Retry: shard.Retry{Attempts: 2, Base: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Ready(ctx); err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("corrupt shard at the peer: %v", err)
	}
}

// TestLoaderHTTP downloads from an HTTP server that fails the first tries of
// every file, and checks that a corrupt shard is rejected.
func TestLoaderHTTP(t *testing.T) {
	dir := prepared(t)
	var calls atomic.Int64
	var steady atomic.Bool
	flaky := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1)%3 != 0 && !steady.Load() {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		http.FileServer(http.Dir(dir)).ServeHTTP(w, r)
	})
	srv := httptest.NewServer(flaky) // listens on 127.0.0.1
	defer srv.Close()
	local, err := Open(context.Background(), Options{Dir: dir, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cache := t.TempDir()
	h, err := shard.NewHTTP(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	h.Retry = shard.Retry{Attempts: 5, Base: time.Millisecond}
	l, err := Open(ctx, Options{Fetcher: h, CacheDir: cache, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(drain(t, l, 0, 50), drain(t, local, 0, 50), slices.Equal) {
		t.Fatal("sequences over HTTP differ")
	}
	sameFiles(t, dir, cache, l.Manifest())
	if st := l.Stats(); st.Fetched != int64(len(l.Manifest().Split(SplitTrain))) {
		t.Fatalf("fetched %d shards, want %d", st.Fetched, len(l.Manifest().Split(SplitTrain)))
	}

	// A second Loader on the same cache fetches nothing.
	l2, err := Open(ctx, Options{Fetcher: h, CacheDir: cache, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	if err := l2.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if st := l2.Stats(); st.Fetched != 0 {
		t.Fatalf("second loader fetched %d shards from a full cache", st.Fetched)
	}
	l2.Close()

	// A corrupt shard on the server.
	steady.Store(true)
	m, _ := shard.ReadManifest(dir)
	p := filepath.Join(dir, m.Shards[0].Name)
	b, _ := os.ReadFile(p)
	b[100] ^= 1
	os.WriteFile(p, b, 0o644)
	l3, err := Open(ctx, Options{Fetcher: h, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer l3.Close()
	if err := l3.Ready(ctx); err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("corrupt shard over HTTP: %v", err)
	}
	if _, err := Open(ctx, Options{URL: "ftp://x", Dir: t.TempDir()}); err == nil {
		t.Fatal("ftp URL accepted")
	}
}

// slowPeer holds back whole-shard fetches until released.
type slowPeer struct {
	*shard.FlightClient
	release chan struct{}
}

func (p slowPeer) Fetch(ctx context.Context, m *shard.Manifest, s shard.Info, dir string) error {
	select {
	case <-p.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return p.FlightClient.Fetch(ctx, m, s, dir)
}

// TestLoaderPeerRows: before any shard has arrived, a joining node still
// serves the right sequences, row by row from the peer.
func TestLoaderPeerRows(t *testing.T) {
	dir := prepared(t)
	local, err := Open(context.Background(), Options{Dir: dir, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	c, err := shard.DialFlight(serveFlight(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := slowPeer{c, make(chan struct{})}
	l, err := Open(context.Background(), Options{Fetcher: p, CacheDir: t.TempDir(), Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !slices.EqualFunc(drain(t, l, 0, 40), drain(t, local, 0, 40), slices.Equal) {
		t.Fatal("sequences fetched row by row differ")
	}
	if st := l.Stats(); st.Remote != 40 || st.Fetched != 0 {
		t.Fatalf("stats %+v: want 40 remote rows and no shards yet", st)
	}
	close(p.release)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(drain(t, l, 40, 80), drain(t, local, 40, 80), slices.Equal) {
		t.Fatal("sequences from fetched shards differ")
	}
	if st := l.Stats(); st.Remote != 40 {
		t.Fatalf("stats %+v: rows fetched remotely after the shards arrived", st)
	}
}

// BenchmarkLoaderSample draws global steps of 4 from local shards, as
// `trainer bench data` does.
func BenchmarkLoaderSample(b *testing.B) {
	dir := b.TempDir()
	root := filepath.Join(b.TempDir(), "c")
	os.MkdirAll(root, 0o755)
	for i := range 64 {
		os.WriteFile(filepath.Join(root, strconv.Itoa(i)+".txt"), bytes.Repeat([]byte(strconv.Itoa(i)+" lorem ipsum dolor\n"), 2000), 0o644)
	}
	if _, err := Prepare(context.Background(), PrepareOptions{Inputs: []string{root}, Out: dir, SeqLen: 256}); err != nil {
		b.Fatal(err)
	}
	l, err := Open(context.Background(), Options{Dir: dir, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	dst := make([]int32, 256)
	b.SetBytes(256 * 4)
	k := int64(0)
	for b.Loop() {
		l.Prefetch(k+4, k+8)
		for range 4 {
			if err := l.Sample(k, dst); err != nil {
				b.Fatal(err)
			}
			k++
		}
	}
	b.ReportMetric(float64(k)/b.Elapsed().Seconds(), "seq/s")
}
