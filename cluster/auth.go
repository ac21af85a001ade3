package cluster

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// authHeader carries a call token: 8 bytes of Unix nanoseconds, a random
// nonce, and HMAC-SHA256(authKey, tag|method|time|nonce).
const (
	authHeader = "difftrain-auth-bin"
	nonceLen   = 16
	tokenLen   = 8 + nonceLen + sha256.Size
	maxNonces  = 1 << 20
)

// ServerOptions returns the options that make a gRPC server check every call
// (unary and streaming) against sec: transport credentials for mutual TLS,
// and a tap handle that refuses calls without a valid token as the stream
// opens, before any message of it is read, so an unauthenticated peer
// cannot make the server buffer a message. Interceptors check again that
// every call passed it. With a nil sec it returns nothing. Every service on
// the node's server gets the same check; the server can have no other tap
// handle.
func ServerOptions(sec *Security) []grpc.ServerOption {
	if sec == nil {
		return nil
	}
	var opts []grpc.ServerOption
	if sec.server != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(sec.server)))
	}
	if sec.authKey != nil {
		opts = append(opts,
			grpc.InTapHandle(sec.tap),
			grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				if err := sec.check(ctx, info.FullMethod); err != nil {
					return nil, err
				}
				return h(ctx, req)
			}),
			grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
				if err := sec.check(ss.Context(), info.FullMethod); err != nil {
					return err
				}
				return h(srv, ss)
			}))
	}
	return opts
}

// DialOptions returns the options a client needs to call a server set up
// with ServerOptions(sec): transport credentials (TLS or plaintext) and
// interceptors that attach a fresh token to every call.
func DialOptions(sec *Security) []grpc.DialOption {
	if sec == nil {
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	var opts []grpc.DialOption
	if sec.client != nil {
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(sec.client)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if sec.authKey != nil {
		opts = append(opts,
			grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, resp any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, o ...grpc.CallOption) error {
				ctx, err := sec.sign(ctx, method)
				if err != nil {
					return err
				}
				return inv(ctx, method, req, resp, cc, o...)
			}),
			grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, st grpc.Streamer, o ...grpc.CallOption) (grpc.ClientStream, error) {
				ctx, err := sec.sign(ctx, method)
				if err != nil {
					return nil, err
				}
				return st(ctx, desc, cc, method, o...)
			}))
	}
	return opts
}

func (s *Security) mac(method string, t, nonce []byte) []byte {
	h := hmac.New(sha256.New, s.authKey)
	h.Write([]byte("difftrain rpc v1\x00"))
	h.Write([]byte(method))
	h.Write([]byte{0})
	h.Write(t)
	h.Write(nonce)
	return h.Sum(nil)
}

// token builds a call token for method at time now.
func (s *Security) token(method string, now time.Time) ([]byte, error) {
	tok := make([]byte, 8, tokenLen)
	binary.BigEndian.PutUint64(tok, uint64(now.UnixNano()))
	nonce := make([]byte, nonceLen)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("call token nonce: %w", err)
	}
	tok = append(tok, nonce...)
	return append(tok, s.mac(method, tok[:8], nonce)...), nil
}

func (s *Security) sign(ctx context.Context, method string) (context.Context, error) {
	tok, err := s.token(method, time.Now())
	if err != nil {
		return ctx, err
	}
	return metadata.AppendToOutgoingContext(ctx, authHeader, string(tok)), nil
}

// tapped marks a stream context whose token the tap handle accepted; its
// value is the method the token was for.
type tapped struct{}

// tap checks the token of a new stream from its headers.
func (s *Security) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if err := s.refuse(ctx, info.FullMethodName, s.verify(info.Header, info.FullMethodName, time.Now())); err != nil {
		return ctx, err
	}
	return context.WithValue(ctx, tapped{}, info.FullMethodName), nil
}

// check refuses a call that did not pass the tap handle and has no valid
// token of its own.
func (s *Security) check(ctx context.Context, method string) error {
	if m, ok := ctx.Value(tapped{}).(string); ok && m == method {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	return s.refuse(ctx, method, s.verify(md, method, time.Now()))
}

// refuse turns a token that is missing, malformed, stale, replayed or
// forged into Unauthenticated, and logs it with the caller's address.
func (s *Security) refuse(ctx context.Context, method string, err error) error {
	if err == nil {
		return nil
	}
	addr := "unknown"
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		addr = p.Addr.String()
	}
	slog.Warn("refused unauthenticated call", "peer", addr, "method", method, "reason", err)
	return status.Error(codes.Unauthenticated, "cluster authentication failed")
}

func (s *Security) verify(md metadata.MD, method string, now time.Time) error {
	vals := md.Get(authHeader)
	if len(vals) != 1 {
		return fmt.Errorf("%d auth tokens, want 1", len(vals))
	}
	tok := []byte(vals[0])
	if len(tok) != tokenLen {
		return fmt.Errorf("auth token of %d bytes, want %d", len(tok), tokenLen)
	}
	t := time.Unix(0, int64(binary.BigEndian.Uint64(tok[:8])))
	if d := now.Sub(t); d > s.window || d < -s.window {
		return fmt.Errorf("auth token time %s is %s away from ours", t.UTC().Format(time.RFC3339), d.Round(time.Second))
	}
	if !hmac.Equal(tok[8+nonceLen:], s.mac(method, tok[:8], tok[8:8+nonceLen])) {
		return errors.New("bad auth token signature")
	}
	var nonce [nonceLen]byte
	copy(nonce[:], tok[8:])
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.swept) > time.Second || len(s.nonces) >= maxNonces {
		for n, exp := range s.nonces {
			if now.After(exp) {
				delete(s.nonces, n)
			}
		}
		s.swept = now
	}
	if _, seen := s.nonces[nonce]; seen {
		return errors.New("replayed auth token")
	}
	if len(s.nonces) >= maxNonces {
		return errors.New("too many calls in the freshness window")
	}
	s.nonces[nonce] = t.Add(s.window)
	return nil
}
