package shard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// Fetcher copies a dataset's manifest and shards from somewhere else: an
// HTTP(S) server (HTTP) or a peer's Flight server (FlightClient).
type Fetcher interface {
	// Manifest returns the remote dataset's validated manifest.
	Manifest(ctx context.Context) (*Manifest, error)
	// Fetch copies shard s of manifest m to dir/s.Name, verified against
	// the manifest's size and sha256, through a temporary file and a
	// rename. It retries transient failures.
	Fetch(ctx context.Context, m *Manifest, s Info, dir string) error
	// Close releases connections.
	Close() error
}

// Retry says how often and how patiently a Fetcher retries.
type Retry struct {
	Attempts int           // tries in all; 0 means 5
	Base     time.Duration // first backoff; doubles per try; 0 means 200ms
	Max      time.Duration // backoff cap; 0 means 5s
}

// permanent marks an error that retrying cannot fix.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// do runs fn until it succeeds, fails permanently, runs out of attempts, or
// ctx ends, sleeping with exponential backoff between tries.
func (r Retry) do(ctx context.Context, what string, fn func() error) error {
	attempts, wait, maxWait := r.Attempts, r.Base, r.Max
	if attempts <= 0 {
		attempts = 5
	}
	if wait <= 0 {
		wait = 200 * time.Millisecond
	}
	if maxWait <= 0 {
		maxWait = 5 * time.Second
	}
	var err error
	for i := range attempts {
		if err = fn(); err == nil {
			return nil
		}
		var p permanent
		if errors.As(err, &p) || ctx.Err() != nil || i == attempts-1 {
			break
		}
		slog.Warn("fetch failed, retrying", "what", what, "attempt", i+1, "backoff", wait, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (after: %v)", what, ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, maxWait)
	}
	var p permanent
	if errors.As(err, &p) {
		return p.error
	}
	return err
}

// HaveShard reports whether dir/s.Name exists with the manifest's size and
// sha256 (a full read of the file).
func HaveShard(dir string, s Info) bool {
	f, err := os.Open(filepath.Join(dir, s.Name))
	if err != nil {
		return false
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || st.Size() != s.Bytes {
		return false
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false
	}
	return hex.EncodeToString(h.Sum(nil)) == s.SHA256
}

// saveVerified copies r to dir/s.Name through a temporary file, checking the
// size and sha256 against s before renaming it into place.
func saveVerified(r io.Reader, dir string, s Info) error {
	return saveChecked(r, dir, "shard", s.Name, s.SHA256, s.Bytes, s.Bytes)
}

// saveChecked copies r to dir/name through a temporary file and renames it
// into place only if it is what the manifest says: sha256 sum and size
// bytes, or any size up to limit when size is negative. what names the
// file in errors.
func saveChecked(r io.Reader, dir, what, name, sum string, size, limit int64) error {
	dst := filepath.Join(dir, name)
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return permanent{fmt.Errorf("%s %s: %w", what, dst, err)}
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after the rename
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, limit+1))
	if err != nil {
		f.Close()
		return fmt.Errorf("%s %s: download: %w", what, name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); n > limit || size >= 0 && n != size || got != sum {
		f.Close()
		if size < 0 {
			return fmt.Errorf("%s %s: checksum mismatch: got %d bytes (at most %d taken) with sha256 %s, manifest says sha256 %s",
				what, name, n, limit, got, sum)
		}
		return fmt.Errorf("%s %s: checksum mismatch: got %d bytes with sha256 %s, manifest says %d bytes with %s",
			what, name, n, got, size, sum)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return permanent{fmt.Errorf("%s %s: %w", what, dst, err)}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return permanent{fmt.Errorf("%s %s: %w", what, dst, err)}
	}
	if err := f.Close(); err != nil {
		return permanent{fmt.Errorf("%s %s: %w", what, dst, err)}
	}
	if err := os.Rename(tmp, dst); err != nil {
		return permanent{fmt.Errorf("%s %s: %w", what, dst, err)}
	}
	return syncDir(dir)
}
