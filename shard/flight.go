package shard

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// ActionManifest is the Flight action whose result is the manifest JSON.
const ActionManifest = "difftrain.manifest"

// maxFlightMsg is the largest gRPC message the Flight client accepts: a
// record batch of DefaultBatchRows is about 1 MiB; a single long row can be
// 4 MiB (maxSeqLen int32 ids).
const maxFlightMsg = 64 << 20

// FlightServer serves the shards of a dataset directory over Arrow Flight:
// DoAction(ActionManifest) returns the manifest, ListFlights and
// GetFlightInfo describe the shards present, and DoGet(ticket = shard name)
// streams a shard's record batches. Only shards present and intact (size and
// sha256 as in the manifest) are served, so a node that is still fetching
// its own copy serves what it has.
type FlightServer struct {
	flight.BaseFlightServer
	dir string

	mu     sync.Mutex
	open   map[string]*served
	closed bool
}

type served struct {
	r     *Reader
	size  int64
	mtime time.Time
	users int
	stale bool
}

// NewFlightServer returns a server for the dataset in dir.
func NewFlightServer(dir string) *FlightServer {
	return &FlightServer{dir: dir, open: make(map[string]*served)}
}

// RegisterFlight registers a Flight server for the dataset in dir on s, so a
// node can host it on its shared gRPC server behind the cluster's
// interceptors. Close the returned server when s stops.
func RegisterFlight(s *grpc.Server, dir string) *FlightServer {
	fs := NewFlightServer(dir)
	flight.RegisterFlightServiceServer(s, fs)
	go fs.Warm()
	return fs
}

// Warm opens and verifies the shards present now, so that the first
// request for each does not wait for its checksum. Errors are left for the
// requests to report.
func (s *FlightServer) Warm() {
	m, _, err := s.manifest()
	if err != nil {
		return
	}
	for _, si := range m.Shards {
		s.mu.Lock()
		done := s.closed
		s.mu.Unlock()
		if done {
			return
		}
		if sv, err := s.acquire(m, si); err == nil {
			s.release(sv)
		}
	}
}

// Close releases the memory maps of the shards served so far.
func (s *FlightServer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for name, sv := range s.open {
		sv.stale = true
		if sv.users == 0 {
			sv.r.Close()
		}
		delete(s.open, name)
	}
	return nil
}

func (s *FlightServer) manifest() (*Manifest, []byte, error) {
	if s.dir == "" {
		return nil, nil, status.Errorf(codes.NotFound, "no dataset manifest here (no data directory)")
	}
	data, err := os.ReadFile(filepath.Join(s.dir, ManifestName))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, status.Errorf(codes.NotFound, "no dataset manifest here")
		}
		return nil, nil, status.Errorf(codes.Internal, "manifest: %v", err)
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, nil, status.Errorf(codes.Internal, "%v", err)
	}
	return m, data, nil
}

// present reports whether shard si looks complete on disk (size only; DoGet
// verifies the checksum when it opens the shard).
func (s *FlightServer) present(si Info) bool {
	st, err := os.Stat(filepath.Join(s.dir, si.Name))
	return err == nil && st.Mode().IsRegular() && st.Size() == si.Bytes
}

func (s *FlightServer) info(m *Manifest, si Info) *flight.FlightInfo {
	meta := m.Meta()
	meta.BatchRows = 1
	return &flight.FlightInfo{
		Schema:           flight.SerializeSchema(meta.Schema(), memory.DefaultAllocator),
		FlightDescriptor: &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{si.Name}},
		Endpoint:         []*flight.FlightEndpoint{{Ticket: &flight.Ticket{Ticket: []byte(si.Name)}}},
		TotalRecords:     si.Sequences,
		TotalBytes:       si.Bytes,
		Ordered:          true,
	}
}

// DoAction answers ActionManifest with the manifest's JSON and
// ActionTokenizer with the tokenizer file.
func (s *FlightServer) DoAction(a *flight.Action, stream flight.FlightService_DoActionServer) error {
	if a.GetType() == ActionTokenizer {
		return s.sendTokenizer(stream)
	}
	if a.GetType() != ActionManifest {
		return status.Errorf(codes.Unimplemented, "unknown action %q", a.GetType())
	}
	_, data, err := s.manifest()
	if err != nil {
		return err
	}
	return stream.Send(&flight.Result{Body: data})
}

// ListActions lists ActionManifest.
func (s *FlightServer) ListActions(_ *flight.Empty, stream flight.FlightService_ListActionsServer) error {
	if err := stream.Send(&flight.ActionType{Type: ActionManifest, Description: "the dataset manifest (JSON)"}); err != nil {
		return err
	}
	return stream.Send(&flight.ActionType{Type: ActionTokenizer, Description: "the dataset's tokenizer file, in pieces"})
}

// ListFlights lists the shards present here.
func (s *FlightServer) ListFlights(_ *flight.Criteria, stream flight.FlightService_ListFlightsServer) error {
	m, _, err := s.manifest()
	if err != nil {
		return err
	}
	for _, si := range m.Shards {
		if !s.present(si) {
			continue
		}
		if err := stream.Send(s.info(m, si)); err != nil {
			return err
		}
	}
	return nil
}

// GetFlightInfo describes one shard, named by a one-element path descriptor.
func (s *FlightServer) GetFlightInfo(_ context.Context, d *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	if d.GetType() != flight.DescriptorPATH || len(d.GetPath()) != 1 {
		return nil, status.Error(codes.InvalidArgument, "want a path descriptor naming one shard")
	}
	m, _, err := s.manifest()
	if err != nil {
		return nil, err
	}
	for _, si := range m.Shards {
		if si.Name == d.Path[0] {
			if !s.present(si) {
				return nil, status.Errorf(codes.NotFound, "shard %s is not here yet", si.Name)
			}
			return s.info(m, si), nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "no shard %q in the manifest", d.Path[0])
}

// acquire opens (or reuses) a validated reader for shard si.
func (s *FlightServer) acquire(m *Manifest, si Info) (*served, error) {
	p := filepath.Join(s.dir, si.Name)
	st, err := os.Stat(p)
	if err != nil || st.Size() != si.Bytes {
		return nil, status.Errorf(codes.NotFound, "shard %s is not here yet", si.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sv := s.open[si.Name]; sv != nil {
		if sv.size == st.Size() && sv.mtime.Equal(st.ModTime()) {
			sv.users++
			return sv, nil
		}
		sv.stale = true
		if sv.users == 0 {
			sv.r.Close()
		}
		delete(s.open, si.Name)
	}
	if s.closed {
		return nil, status.Error(codes.Unavailable, "flight server closed")
	}
	r, err := Open(p, m.Expect(si))
	if err != nil {
		return nil, status.Errorf(codes.DataLoss, "%v", err)
	}
	sv := &served{r: r, size: st.Size(), mtime: st.ModTime(), users: 1}
	s.open[si.Name] = sv
	return sv, nil
}

func (s *FlightServer) release(sv *served) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sv.users--
	if sv.users == 0 && sv.stale {
		sv.r.Close()
	}
}

// maxRowsTicket bounds the rows one row-range ticket may ask for.
const maxRowsTicket = 4096

// rowsTicket is the ticket for rows [lo, hi) of shard name.
func rowsTicket(name string, lo, hi int64) []byte {
	return []byte(name + ":" + strconv.FormatInt(lo, 10) + ":" + strconv.FormatInt(hi, 10))
}

// parseTicket splits a ticket into a shard name and, for a row-range
// ticket, the rows [lo, hi); whole is true for a whole-shard ticket.
func parseTicket(t []byte) (name string, lo, hi int64, whole bool, err error) {
	parts := strings.Split(string(t), ":")
	switch len(parts) {
	case 1:
		return parts[0], 0, 0, true, nil
	case 3:
		lo, err1 := strconv.ParseInt(parts[1], 10, 64)
		hi, err2 := strconv.ParseInt(parts[2], 10, 64)
		if err1 == nil && err2 == nil && lo >= 0 && hi > lo && hi-lo <= maxRowsTicket {
			return parts[0], lo, hi, false, nil
		}
	}
	return "", 0, 0, false, fmt.Errorf("bad ticket %.80q: want NAME or NAME:LO:HI with at most %d rows", t, maxRowsTicket)
}

// DoGet streams the record batches of the shard the ticket names, or, for a
// ticket NAME:LO:HI, rows [LO, HI) of it as one record batch.
func (s *FlightServer) DoGet(t *flight.Ticket, stream flight.FlightService_DoGetServer) error {
	name, lo, hi, whole, err := parseTicket(t.GetTicket())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	m, _, err := s.manifest()
	if err != nil {
		return err
	}
	var si *Info
	for i := range m.Shards {
		if m.Shards[i].Name == name {
			si = &m.Shards[i]
		}
	}
	if si == nil {
		return status.Errorf(codes.NotFound, "no shard %q in the manifest", name)
	}
	sv, err := s.acquire(m, *si)
	if err != nil {
		return err
	}
	defer s.release(sv)
	if !whole {
		return sendRows(stream, sv.r, lo, hi)
	}
	w := flight.NewRecordWriter(stream, ipc.WithSchema(sv.r.Meta().Schema()))
	for b := range sv.r.recs {
		if err := w.Write(sv.r.batch(b)); err != nil {
			w.Close()
			return err
		}
	}
	return w.Close()
}

// sendRows sends rows [lo, hi) of r as one record batch.
func sendRows(stream flight.FlightService_DoGetServer, r *Reader, lo, hi int64) error {
	if hi > r.Len() {
		return status.Errorf(codes.OutOfRange, "rows [%d, %d) of shard %s, which has %d", lo, hi, r.Name(), r.Len())
	}
	meta := r.Meta()
	tb := meta.TokenBytes()
	buf := make([]byte, 0, int(hi-lo)*meta.SeqLen*tb)
	seq := make([]int32, meta.SeqLen)
	for i := lo; i < hi; i++ {
		if err := r.Read(i, seq); err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		for _, t := range seq {
			if tb == 2 {
				buf = binary.LittleEndian.AppendUint16(buf, uint16(t))
			} else {
				buf = binary.LittleEndian.AppendUint32(buf, uint32(t))
			}
		}
	}
	meta.BatchRows = int(hi - lo)
	rec := meta.record(int(hi-lo), buf)
	defer rec.Release()
	w := flight.NewRecordWriter(stream, ipc.WithSchema(meta.Schema()))
	if err := w.Write(rec); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

// FlightClient fetches a dataset from a peer's FlightServer.
type FlightClient struct {
	c     flight.Client
	addr  string
	Retry Retry
}

// DialFlight connects to the Flight server at addr (host:port). Without a
// transport-credentials option the connection is plaintext; opts come after
// the defaults, so they override them (credentials, interceptors, limits).
func DialFlight(addr string, opts ...grpc.DialOption) (*FlightClient, error) {
	all := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxFlightMsg)),
	}, opts...)
	c, err := flight.NewClientWithMiddleware(addr, nil, nil, all...)
	if err != nil {
		return nil, fmt.Errorf("flight peer %s: %w", addr, err)
	}
	return &FlightClient{c: c, addr: addr}, nil
}

// Close closes the connection.
func (c *FlightClient) Close() error { return c.c.Close() }

// Manifest asks the peer for its manifest.
func (c *FlightClient) Manifest(ctx context.Context) (*Manifest, error) {
	var m *Manifest
	err := c.Retry.do(ctx, "manifest from "+c.addr, func() error {
		stream, err := c.c.DoAction(ctx, &flight.Action{Type: ActionManifest})
		if err != nil {
			return grpcErr(c.addr, err)
		}
		res, err := stream.Recv()
		if err != nil {
			return grpcErr(c.addr, err)
		}
		for { // drain the stream
			if _, err := stream.Recv(); err != nil {
				break
			}
		}
		if m, err = ParseManifest(res.GetBody()); err != nil {
			return permanent{fmt.Errorf("peer %s: %w", c.addr, err)}
		}
		return nil
	})
	return m, err
}

// grpcErr wraps a gRPC error, marking the ones retrying cannot fix.
func grpcErr(addr string, err error) error {
	err = fmt.Errorf("peer %s: %w", addr, err)
	switch status.Code(err) {
	case codes.NotFound, codes.InvalidArgument, codes.Unimplemented, codes.PermissionDenied, codes.Unauthenticated:
		return permanent{err}
	}
	return err
}

// Fetch streams shard s from the peer and writes it to dir/s.Name; the copy
// must match the manifest's size and sha256 byte for byte.
func (c *FlightClient) Fetch(ctx context.Context, m *Manifest, s Info, dir string) error {
	return c.Retry.do(ctx, "shard "+s.Name+" from "+c.addr, func() error {
		return c.fetch(ctx, m, s, dir)
	})
}

// checked vets each Flight message from a peer before the Arrow decoder,
// which trusts lengths, sees it.
type checked struct{ s flight.DataStreamReader }

func (c checked) Recv() (*flight.FlightData, error) {
	d, err := c.s.Recv()
	if err != nil {
		return nil, err
	}
	if len(d.DataHeader) > 0 {
		if err := checkStreamHeader(d.DataHeader); err != nil {
			return nil, permanent{err}
		}
	}
	return d, nil
}

func (c *FlightClient) fetch(ctx context.Context, m *Manifest, s Info, dir string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = permanent{fmt.Errorf("peer %s: shard %s: malformed Arrow stream: %v", c.addr, s.Name, p)}
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.c.DoGet(ctx, &flight.Ticket{Ticket: []byte(s.Name)})
	if err != nil {
		return grpcErr(c.addr, err)
	}
	rd, err := flight.NewRecordReader(checked{stream})
	if err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("peer %s: shard %s: empty stream", c.addr, s.Name)
		}
		return grpcErr(c.addr, err)
	}
	defer rd.Release()
	meta, err := metaFromSchema(rd.Schema())
	if err == nil {
		err = meta.matches(m.Expect(s))
	}
	if err != nil {
		return permanent{fmt.Errorf("peer %s: shard %s: %w", c.addr, s.Name, err)}
	}
	w, err := Create(filepath.Join(dir, s.Name), meta)
	if err != nil {
		return permanent{err}
	}
	defer w.Abort()
	seq := make([]int32, meta.SeqLen)
	for rd.Next() {
		rec := rd.RecordBatch()
		tmp := &Reader{name: s.Name, meta: meta}
		if err := tmp.addBatch(0, 1, rec); err != nil {
			return fmt.Errorf("peer %s: shard %s: %w", c.addr, s.Name, err)
		}
		for i := range tmp.n {
			tmp.readAt(i, seq)
			if err := w.Add(seq); err != nil {
				return err
			}
		}
	}
	if err := rd.Err(); err != nil {
		return grpcErr(c.addr, err)
	}
	_, err = w.CloseVerified(s)
	return err
}

// FetchRows asks the peer for rows [lo, hi) of shard s (at most 4096) and
// returns their tokens, flat. Unlike Fetch, this is not checked against the
// shard's sha256 (the rows are checked for shape and token range); it lets a
// node that is still fetching a shard read from it at once. No retries.
func (c *FlightClient) FetchRows(ctx context.Context, m *Manifest, s Info, lo, hi int64) ([]int32, error) {
	if lo < 0 || hi <= lo || hi > s.Sequences || hi-lo > maxRowsTicket {
		return nil, fmt.Errorf("shard %s: rows [%d, %d) out of range", s.Name, lo, hi)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.c.DoGet(ctx, &flight.Ticket{Ticket: rowsTicket(s.Name, lo, hi)})
	if err != nil {
		return nil, grpcErr(c.addr, err)
	}
	out, err := decodeRows(stream, m.Expect(s), hi-lo)
	if err != nil {
		return nil, fmt.Errorf("peer %s: shard %s: %w", c.addr, s.Name, err)
	}
	return out, nil
}

// decodeRows reads a row-range stream of n rows from a peer and returns the
// tokens, flat, checked against want.
func decodeRows(stream flight.DataStreamReader, want Expect, n int64) (out []int32, err error) {
	defer func() {
		if p := recover(); p != nil {
			out, err = nil, fmt.Errorf("malformed Arrow stream: %v", p)
		}
	}()
	rd, err := flight.NewRecordReader(checked{stream})
	if err != nil {
		return nil, err
	}
	defer rd.Release()
	meta, err := metaFromSchema(rd.Schema())
	if err == nil {
		err = meta.matches(want)
	}
	if err != nil {
		return nil, err
	}
	tmp := &Reader{meta: meta}
	for rd.Next() {
		if tmp.n > 0 {
			return nil, errors.New("more than one record batch for a row range")
		}
		if err := tmp.addBatch(0, 1, rd.RecordBatch()); err != nil {
			return nil, err
		}
	}
	if err := rd.Err(); err != nil {
		return nil, err
	}
	if tmp.n != n {
		return nil, fmt.Errorf("got %d rows, asked for %d", tmp.n, n)
	}
	out = make([]int32, 0, int(n)*meta.SeqLen)
	seq := make([]int32, meta.SeqLen)
	for i := range tmp.n {
		tmp.readAt(i, seq)
		out = append(out, seq...)
	}
	return out, nil
}
