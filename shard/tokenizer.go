package shard

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ActionTokenizer is the Flight action whose results are the dataset's
// tokenizer file (Manifest.TokenizerFile), in pieces of at most
// tokenizerPiece bytes.
const ActionTokenizer = "difftrain.tokenizer"

const (
	maxTokenizer   = 256 << 20 // a tokenizer file larger than this is refused
	tokenizerPiece = 1 << 20
)

// tokenizerName returns the manifest's tokenizer file name, checked to be a
// plain name in the dataset directory; "" when there is none.
func tokenizerName(m *Manifest) (string, error) {
	name := m.TokenizerFile
	if name == "" {
		return "", nil
	}
	if filepath.Base(name) != name || name == "." || name == ".." || name == ManifestName {
		return "", fmt.Errorf("manifest: tokenizer file %q is not a plain file name", name)
	}
	return name, nil
}

// sendTokenizer streams the dataset's tokenizer file.
func (s *FlightServer) sendTokenizer(stream flight.FlightService_DoActionServer) error {
	m, _, err := s.manifest()
	if err != nil {
		return err
	}
	name, err := tokenizerName(m)
	if err != nil {
		return status.Errorf(codes.Internal, "%v", err)
	}
	if name == "" {
		return status.Errorf(codes.NotFound, "the dataset has no tokenizer file")
	}
	f, err := os.Open(filepath.Join(s.dir, name))
	if err != nil {
		return status.Errorf(codes.NotFound, "tokenizer file %s: %v", name, err)
	}
	defer f.Close()
	buf := make([]byte, tokenizerPiece)
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			if err := stream.Send(&flight.Result{Body: buf[:n]}); err != nil {
				return err
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return status.Errorf(codes.Internal, "tokenizer file %s: %v", name, err)
		}
	}
}

// FetchTokenizer copies m's tokenizer file from the peer to dir, verified
// against the manifest's sha256. A manifest without one needs nothing.
func (c *FlightClient) FetchTokenizer(ctx context.Context, m *Manifest, dir string) error {
	name, err := tokenizerName(m)
	if err != nil || name == "" {
		return err
	}
	return c.Retry.do(ctx, "tokenizer file from "+c.addr, func() error {
		stream, err := c.c.DoAction(ctx, &flight.Action{Type: ActionTokenizer})
		if err != nil {
			return grpcErr(c.addr, err)
		}
		pr, pw := io.Pipe()
		go func() {
			for {
				res, err := stream.Recv()
				if err != nil {
					if err == io.EOF {
						err = nil
					} else {
						err = grpcErr(c.addr, err)
					}
					pw.CloseWithError(err)
					return
				}
				if _, err := pw.Write(res.GetBody()); err != nil {
					return
				}
			}
		}()
		err = saveTokenizer(pr, m, name, dir)
		pr.Close()
		return err
	})
}

// FetchTokenizer downloads m's tokenizer file into dir, verified.
func (h *HTTP) FetchTokenizer(ctx context.Context, m *Manifest, dir string) error {
	name, err := tokenizerName(m)
	if err != nil || name == "" {
		return err
	}
	return h.Retry.do(ctx, "tokenizer file "+name, func() error {
		body, err := h.get(ctx, name)
		if err != nil {
			return err
		}
		defer body.Close()
		return saveTokenizer(body, m, name, dir)
	})
}

// saveTokenizer copies r to dir/name, renaming it into place only when its
// sha256 is the manifest's.
func saveTokenizer(r io.Reader, m *Manifest, name, dir string) error {
	return saveChecked(r, dir, "tokenizer file", name, m.TokenizerSHA256, -1, maxTokenizer)
}
