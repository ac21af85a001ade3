package dataset

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/difftrain/difftrain/shard"
)

// Options say where a Loader finds its dataset.
type Options struct {
	// Dir is a local dataset directory (manifest.json and shards). With URL
	// or Peer it is also the cache the shards are copied into, unless
	// CacheDir is set.
	Dir string
	// URL is an http(s) base URL serving manifest.json and the shards.
	URL string
	// Peer is the host:port of a node's Flight server (shard.RegisterFlight).
	Peer string
	// PeerDial are extra options for dialling Peer (credentials,
	// interceptors); they override the plaintext default.
	PeerDial []grpc.DialOption
	// Fetcher overrides URL and Peer with a custom source of shards.
	Fetcher shard.Fetcher
	// CacheDir receives shards fetched from URL or Peer (default Dir).
	CacheDir string
	// Split is the manifest split to read (default "train").
	Split string
	// Seed keys the global sample order.
	Seed uint64
	// Cache is the prefetch cache capacity in sequences (default 8192).
	Cache int
	// Fetches is how many shards are downloaded at once (default 2).
	Fetches int
	// Retry says how URL and Peer fetches retry (zero: shard's defaults).
	Retry shard.Retry
}

// Stats counts what a Loader has done.
type Stats struct {
	Hits    int64 // samples served from the prefetch cache
	Misses  int64 // samples read on demand
	Stalls  int64 // samples that waited for a shard to arrive
	Fetched int64 // shards copied from the remote source
	Remote  int64 // sequences read from a peer before their shard arrived
}

// Loader is the Source a trainer reads: the sequences of one split of a
// dataset in the run's global order, from local shards or shards copied on
// demand from an HTTP server or a peer. Prefetch hints let a background
// goroutine read ahead so that Sample does not wait. From a peer, a sequence
// whose shard has not arrived yet is fetched on its own (one small RPC), so a
// joining node can train before its copy of the dataset is complete. A
// Loader is safe for concurrent use.
type Loader struct {
	man     *shard.Manifest
	split   string
	infos   []shard.Info
	offs    []int64 // offs[i]: global index of shard i's first sequence; offs[len] = n
	order   Order
	dir     string // where the shards are read from
	fetcher shard.Fetcher
	ownF    bool // Close closes fetcher
	slots   []*slot
	sem     chan struct{}
	pf      *prefetcher

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	hits, misses, stalls, fetched, remote atomic.Int64

	tok tokenizerCache // the dataset's tokenizer file (hftokenizer.go)
}

// slot is one shard's state: ready when r is set, failed when err is.
type slot struct {
	mu    sync.Mutex
	r     *shard.Reader
	err   error
	busy  bool
	ready chan struct{} // closed when a fetch attempt ends
}

// Open opens the dataset that o names. A local dataset is validated in full
// (sizes, checksums, schemas, token ids) before Open returns. With URL or
// Peer, Open fetches the manifest and returns at once; shards already in the
// cache are verified and used, the others are fetched in the background,
// those needed soonest (Sample, Prefetch) first.
func Open(ctx context.Context, o Options) (*Loader, error) {
	if o.Split == "" {
		o.Split = "train"
	}
	if o.Cache <= 0 {
		o.Cache = 8192
	}
	if o.Fetches <= 0 {
		o.Fetches = 2
	}
	f := o.Fetcher
	switch {
	case f != nil:
	case o.URL != "" && o.Peer != "":
		return nil, errors.New("dataset: set URL or Peer, not both")
	case o.URL != "":
		h, err := shard.NewHTTP(o.URL)
		if err != nil {
			return nil, fmt.Errorf("dataset: %w", err)
		}
		h.Retry = o.Retry
		f = h
	case o.Peer != "":
		c, err := shard.DialFlight(o.Peer, o.PeerDial...)
		if err != nil {
			return nil, fmt.Errorf("dataset: %w", err)
		}
		c.Retry = o.Retry
		f = c
	}
	l, err := open(ctx, o, f)
	if err == nil {
		l.ownF = o.Fetcher == nil
	}
	if err != nil && f != nil && o.Fetcher == nil {
		f.Close()
	}
	return l, err
}

func open(ctx context.Context, o Options, f shard.Fetcher) (*Loader, error) {
	l := &Loader{split: o.Split, fetcher: f, dir: o.Dir, sem: make(chan struct{}, o.Fetches)}
	var err error
	if f == nil {
		if o.Dir == "" {
			return nil, errors.New("dataset: no source: set Dir, URL or Peer")
		}
		if l.man, err = shard.ReadManifest(o.Dir); err != nil {
			return nil, fmt.Errorf("dataset: %w", err)
		}
	} else {
		if o.CacheDir != "" {
			l.dir = o.CacheDir
		}
		if l.dir == "" {
			return nil, errors.New("dataset: a remote source needs Dir or CacheDir for its shards")
		}
		if err := os.MkdirAll(l.dir, 0o755); err != nil {
			return nil, fmt.Errorf("dataset: cache: %w", err)
		}
		if l.man, err = f.Manifest(ctx); err != nil {
			return nil, fmt.Errorf("dataset: %w", err)
		}
		// The cache becomes a dataset directory in its own right, which
		// this node's Flight server can serve as its shards arrive.
		if err := shard.WriteManifest(l.dir, l.man); err != nil {
			return nil, fmt.Errorf("dataset: cache: %w", err)
		}
		fetchTokenizer(ctx, f, l.man, l.dir)
	}
	if _, err := TokenizerByName(l.man.Tokenizer); err != nil && l.man.TokenizerFile == "" {
		slog.Warn("dataset: manifest names a tokenizer this build lacks; token ids are still usable", "tokenizer", l.man.Tokenizer)
	}
	l.infos = l.man.Split(o.Split)
	if len(l.infos) == 0 {
		return nil, fmt.Errorf("dataset: manifest has no shards in split %q", o.Split)
	}
	l.offs = make([]int64, len(l.infos)+1)
	for i, s := range l.infos {
		l.offs[i+1] = l.offs[i] + s.Sequences
	}
	if l.order, err = NewOrder(l.offs[len(l.infos)], o.Seed); err != nil {
		return nil, err
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.slots = make([]*slot, len(l.infos))
	for i := range l.slots {
		l.slots[i] = &slot{}
	}
	if f == nil {
		for i, s := range l.infos {
			r, err := shard.Open(filepath.Join(l.dir, s.Name), l.man.Expect(s))
			if err != nil {
				l.Close()
				return nil, fmt.Errorf("dataset %s: %w", o.Dir, err)
			}
			l.slots[i].r = r
		}
	} else {
		l.wg.Add(1)
		go l.sweep()
	}
	l.pf = newPrefetcher(l, o.Cache)
	return l, nil
}

// sweep fetches every shard in manifest order, in the background.
func (l *Loader) sweep() {
	defer l.wg.Done()
	for i := range l.slots {
		select {
		case <-l.ensure(i):
		case <-l.ctx.Done():
			return
		}
	}
}

// ensure starts fetching shard i unless it is ready or on its way, and
// returns a channel closed when the attempt ends.
func (l *Loader) ensure(i int) <-chan struct{} {
	s := l.slots[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.r != nil {
		return closed
	}
	if s.busy {
		return s.ready
	}
	s.busy, s.err, s.ready = true, nil, make(chan struct{})
	l.wg.Add(1)
	go l.fetch(i, s)
	return s.ready
}

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (l *Loader) fetch(i int, s *slot) {
	defer l.wg.Done()
	r, err := l.fetchShard(l.infos[i])
	s.mu.Lock()
	s.r, s.err, s.busy = r, err, false
	close(s.ready)
	s.mu.Unlock()
	if err != nil && l.ctx.Err() == nil {
		slog.Error("dataset: shard fetch failed", "shard", l.infos[i].Name, "err", err)
	}
}

func (l *Loader) fetchShard(si shard.Info) (*shard.Reader, error) {
	select {
	case l.sem <- struct{}{}:
		defer func() { <-l.sem }()
	case <-l.ctx.Done():
		return nil, fmt.Errorf("shard %s: loader closed", si.Name)
	}
	if !shard.HaveShard(l.dir, si) {
		t := time.Now()
		if err := l.fetcher.Fetch(l.ctx, l.man, si, l.dir); err != nil {
			return nil, err
		}
		l.fetched.Add(1)
		slog.Debug("dataset: fetched shard", "shard", si.Name, "bytes", si.Bytes, "took", time.Since(t))
	}
	// The file was just verified against the manifest's checksum.
	want := l.man.Expect(si)
	want.SHA256 = ""
	return shard.Open(filepath.Join(l.dir, si.Name), want)
}

// reader returns shard i's reader, waiting for it to arrive if need be.
func (l *Loader) reader(i int, sample bool) (*shard.Reader, error) {
	s := l.slots[i]
	s.mu.Lock()
	r := s.r
	s.mu.Unlock()
	if r != nil {
		return r, nil
	}
	if sample {
		l.stalls.Add(1)
	}
	select {
	case <-l.ensure(i):
	case <-l.ctx.Done():
		return nil, fmt.Errorf("dataset: loader closed")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.r == nil {
		if s.err == nil {
			return nil, fmt.Errorf("dataset: shard %s: loader closed", l.infos[i].Name)
		}
		return nil, fmt.Errorf("dataset: %w", s.err)
	}
	return s.r, nil
}

// rowFetcher is a Fetcher that can also fetch single rows
// (shard.FlightClient).
type rowFetcher interface {
	FetchRows(ctx context.Context, m *shard.Manifest, s shard.Info, lo, hi int64) ([]int32, error)
}

// isReady reports whether shard i is open locally.
func (l *Loader) isReady(i int) bool {
	s := l.slots[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r != nil
}

// locate maps a global position to (shard, row).
func (l *Loader) locate(k int64) (int, int64) {
	g := l.order.At(k)
	i := sort.Search(len(l.infos), func(i int) bool { return l.offs[i+1] > g })
	return i, g - l.offs[i]
}

// read copies the sequence at position k into dst, bypassing the cache;
// sample says whether Sample (rather than the prefetcher) asks.
func (l *Loader) read(k int64, dst []int32, sample bool) error {
	i, row := l.locate(k)
	if rf, ok := l.fetcher.(rowFetcher); ok && !l.isReady(i) {
		// Read the one row from the peer rather than wait for the shard.
		l.ensure(i)
		toks, err := rf.FetchRows(l.ctx, l.man, l.infos[i], row, row+1)
		if err == nil {
			copy(dst, toks)
			l.remote.Add(1)
			return nil
		}
		slog.Debug("dataset: row fetch failed; waiting for the shard", "shard", l.infos[i].Name, "row", row, "err", err)
	}
	r, err := l.reader(i, sample)
	if err != nil {
		return err
	}
	return r.Read(row, dst)
}

// SeqLen returns the tokens per sequence.
func (l *Loader) SeqLen() int { return l.man.SeqLen }

// Vocab returns the vocabulary size.
func (l *Loader) Vocab() int { return l.man.Vocab }

// Len returns the number of sequences in the split: the length of an epoch.
func (l *Loader) Len() int64 { return l.order.Len() }

// Epoch returns the epoch of global position k.
func (l *Loader) Epoch(k int64) int64 { return l.order.Epoch(k) }

// Manifest returns the dataset's manifest.
func (l *Loader) Manifest() *shard.Manifest { return l.man }

// Index returns the sequence index (in manifest order across the split's
// shards) served at global position k.
func (l *Loader) Index(k int64) int64 { return l.order.At(k) }

// Sample copies the sequence at global position k into dst.
func (l *Loader) Sample(k int64, dst []int32) error {
	if k < 0 {
		return fmt.Errorf("dataset: negative position %d", k)
	}
	if len(dst) != l.man.SeqLen {
		return fmt.Errorf("dataset: destination holds %d tokens, want %d", len(dst), l.man.SeqLen)
	}
	if l.pf.get(k, dst) {
		l.hits.Add(1)
		return nil
	}
	l.misses.Add(1)
	return l.read(k, dst, true)
}

// Prefetch hints that positions [lo, hi) will be sampled soon: a background
// goroutine reads them into the cache (at most the cache's capacity), and
// starts fetching the shards they live in. It does not block.
func (l *Loader) Prefetch(lo, hi int64) { l.pf.hint(lo, hi) }

// Ready waits until every shard of the split is local and open.
func (l *Loader) Ready(ctx context.Context) error {
	for i := range l.slots {
		for {
			select {
			case <-l.ensure(i):
			case <-ctx.Done():
				return ctx.Err()
			case <-l.ctx.Done():
				return errors.New("dataset: loader closed")
			}
			s := l.slots[i]
			s.mu.Lock()
			r, err := s.r, s.err
			s.mu.Unlock()
			if r != nil {
				break
			}
			if err != nil {
				return fmt.Errorf("dataset: %w", err)
			}
		}
	}
	return nil
}

// Stats returns counters of the Loader's work.
func (l *Loader) Stats() Stats {
	return Stats{Hits: l.hits.Load(), Misses: l.misses.Load(), Stalls: l.stalls.Load(), Fetched: l.fetched.Load(), Remote: l.remote.Load()}
}

// Close stops the background work and releases the shards.
func (l *Loader) Close() error {
	l.cancel()
	if l.pf != nil {
		l.pf.stop()
	}
	l.wg.Wait()
	for _, s := range l.slots {
		s.mu.Lock()
		if s.r != nil {
			s.r.Close()
			s.r = nil
		}
		s.mu.Unlock()
	}
	if l.fetcher != nil && l.ownF {
		return l.fetcher.Close()
	}
	return nil
}
