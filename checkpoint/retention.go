package checkpoint

import (
	"path/filepath"
)

// retain deletes the complete checkpoints that the retention policy does not
// keep: all but the newest opt.Keep, except multiples of opt.KeepEvery.
// Failures are logged; they never fail the save that triggered them.
func (w *Writer) retain() {
	if w.opt.Keep < 0 {
		return
	}
	cps, err := List(w.dir)
	if err != nil {
		w.log.Warn("checkpoint retention: listing failed", "dir", w.dir, "err", err)
		return
	}
	for _, c := range drop(cps, w.opt.Keep, w.opt.KeepEvery) {
		name := filepath.Base(c.Path)
		if err := remove(w.dir, name); err != nil {
			w.log.Warn("checkpoint retention: could not delete", "path", c.Path, "err", err)
			continue
		}
		w.log.Info("checkpoint deleted by retention", "path", c.Path, "keep", w.opt.Keep, "keep_every", w.opt.KeepEvery)
	}
}

// drop returns the checkpoints of cps (newest first) that retention deletes.
func drop(cps []Info, keep int, every int64) []Info {
	var out []Info
	for i, c := range cps {
		if i < keep || every > 0 && c.Step%every == 0 {
			continue
		}
		out = append(out, c)
	}
	return out
}
