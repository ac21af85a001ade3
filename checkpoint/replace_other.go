//go:build !linux

package checkpoint

// exchange swaps two paths atomically; not available here.
var exchange = func(a, b string) error { return errNoExchange }
