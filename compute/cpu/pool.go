package cpu

import "sync"

// job is a kernel split over index ranges: run handles [lo, hi) on worker w
// (0 <= w < threads). Jobs are preallocated structs in Backend.jobs, so
// dispatching one allocates nothing.
type job interface{ run(w, lo, hi int) }

type task struct {
	j         job
	w, lo, hi int
}

// pool is a persistent set of worker goroutines. Worker 0 is the caller.
type pool struct {
	n    int
	work []chan task
	wg   sync.WaitGroup
}

func newPool(n int) *pool {
	p := &pool{n: n, work: make([]chan task, n)}
	for w := 1; w < n; w++ {
		ch := make(chan task, 1)
		p.work[w] = ch
		go func() {
			for t := range ch {
				t.j.run(t.w, t.lo, t.hi)
				p.wg.Done()
			}
		}()
	}
	return p
}

// run splits [0, n) into at most p.n contiguous chunks of at least grain
// indices and runs them in parallel, returning when all are done.
func (p *pool) run(j job, n, grain int) {
	if n <= 0 {
		return
	}
	if grain < 1 {
		grain = 1
	}
	k := min(p.n, (n+grain-1)/grain)
	if k <= 1 {
		j.run(0, 0, n)
		return
	}
	p.wg.Add(k - 1)
	for w := 1; w < k; w++ {
		p.work[w] <- task{j: j, w: w, lo: w * n / k, hi: (w + 1) * n / k}
	}
	j.run(0, 0, n/k)
	p.wg.Wait()
}

func (p *pool) close() {
	for _, ch := range p.work[1:] {
		close(ch)
	}
	p.work = p.work[:1]
	p.n = 1
}
