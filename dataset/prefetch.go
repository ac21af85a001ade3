package dataset

import "sync"

// prefetcher reads hinted positions ahead of Sample into a bounded cache.
// Hints queue up in order; when the cache is full the oldest entries go.
type prefetcher struct {
	l   *Loader
	cap int

	mu      sync.Mutex
	wake    *sync.Cond
	windows [][2]int64        // pending hints, oldest first
	cache   map[int64][]int32 // position -> tokens
	fifo    []int64           // cached positions in insertion order
	free    [][]int32
	done    bool
	exited  chan struct{}
}

func newPrefetcher(l *Loader, capacity int) *prefetcher {
	p := &prefetcher{l: l, cap: capacity, cache: make(map[int64][]int32), exited: make(chan struct{})}
	p.wake = sync.NewCond(&p.mu)
	go p.run()
	return p
}

// hint queues [lo, hi), clamped to the cache's capacity.
func (p *prefetcher) hint(lo, hi int64) {
	lo = max(lo, 0)
	hi = min(hi, lo+int64(p.cap))
	if hi <= lo {
		return
	}
	// Start fetching the shards the window needs now, so that a remote
	// shard is on its way before the reads below reach it.
	if p.l.fetcher != nil {
		seen := map[int]bool{}
		for k := lo; k < hi; k++ {
			i, _ := p.l.locate(k)
			if !seen[i] {
				seen[i] = true
				p.l.ensure(i)
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.windows) >= 64 { // a caller far ahead of the reader: keep the newest
		p.windows = p.windows[1:]
	}
	p.windows = append(p.windows, [2]int64{lo, hi})
	p.wake.Signal()
}

// get copies a cached position into dst.
func (p *prefetcher) get(k int64, dst []int32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.cache[k]
	if ok {
		copy(dst, s)
	}
	return ok
}

func (p *prefetcher) stop() {
	p.mu.Lock()
	p.done = true
	p.wake.Broadcast()
	p.mu.Unlock()
	<-p.exited
}

func (p *prefetcher) run() {
	defer close(p.exited)
	n := p.l.SeqLen()
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		for !p.done && len(p.windows) == 0 {
			p.wake.Wait()
		}
		if p.done {
			return
		}
		w := p.windows[0]
		p.windows = p.windows[1:]
		for k := w[0]; k < w[1] && !p.done; k++ {
			if _, ok := p.cache[k]; ok {
				continue
			}
			var buf []int32
			if len(p.free) > 0 {
				buf, p.free = p.free[len(p.free)-1], p.free[:len(p.free)-1]
			} else {
				buf = make([]int32, n)
			}
			p.mu.Unlock()
			err := p.l.read(k, buf, false)
			p.mu.Lock()
			if err != nil { // Sample will read it again and report the error
				p.free = append(p.free, buf)
				continue
			}
			if len(p.fifo) >= p.cap {
				old := p.fifo[0]
				p.fifo = p.fifo[1:]
				p.free = append(p.free, p.cache[old])
				delete(p.cache, old)
			}
			p.cache[k] = buf
			p.fifo = append(p.fifo, k)
		}
	}
}

// cached returns the number of cached sequences.
func (p *prefetcher) cached() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.cache)
}
