package shard

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// HTTP fetches a dataset from a base URL that serves manifest.json and the
// shard files beside it.
type HTTP struct {
	Base   string       // base URL, e.g. https://host/data/
	Client *http.Client // nil: a client with a response-header timeout
	Retry  Retry
}

// NewHTTP returns an HTTP fetcher for base, which must be an http or https
// URL.
func NewHTTP(base string) (*HTTP, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("dataset URL %q: want http:// or https:// with a host", base)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = 30 * time.Second
	return &HTTP{Base: strings.TrimSuffix(base, "/") + "/", Client: &http.Client{Transport: tr}}, nil
}

// get issues a GET for name under the base URL; the caller closes the body.
func (h *HTTP) get(ctx context.Context, name string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.Base+name, nil)
	if err != nil {
		return nil, permanent{fmt.Errorf("GET %s: %w", h.Base+name, err)}
	}
	resp, err := h.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", h.Base+name, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		err := fmt.Errorf("GET %s: %s", h.Base+name, resp.Status)
		if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusRequestTimeout {
			return nil, permanent{err}
		}
		return nil, err
	}
	return resp.Body, nil
}

// Manifest downloads and validates the manifest.
func (h *HTTP) Manifest(ctx context.Context) (*Manifest, error) {
	var m *Manifest
	err := h.Retry.do(ctx, "manifest "+h.Base, func() error {
		body, err := h.get(ctx, ManifestName)
		if err != nil {
			return err
		}
		defer body.Close()
		data, err := io.ReadAll(io.LimitReader(body, maxManifest+1))
		if err != nil {
			return fmt.Errorf("GET %s%s: %w", h.Base, ManifestName, err)
		}
		if m, err = ParseManifest(data); err != nil {
			return permanent{fmt.Errorf("%s%s: %w", h.Base, ManifestName, err)}
		}
		return nil
	})
	return m, err
}

// Fetch downloads shard s into dir, verified, retrying with backoff.
func (h *HTTP) Fetch(ctx context.Context, m *Manifest, s Info, dir string) error {
	return h.Retry.do(ctx, "shard "+s.Name, func() error {
		body, err := h.get(ctx, s.Name)
		if err != nil {
			return err
		}
		defer body.Close()
		return saveVerified(body, dir, s)
	})
}

// Close releases idle connections.
func (h *HTTP) Close() error {
	h.Client.CloseIdleConnections()
	return nil
}
