package cluster

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

func sampleGen() Generation {
	return Generation{ID: 7, Base: 5, Start: 1200, Coordinator: "a-1", Ring: []Member{
		{Name: "a-1", Addr: "10.0.0.1:7000", Step: 1200},
		{Name: "b-2", Addr: "10.0.0.2:7000", Step: 1199},
		{Name: "c-3", Addr: "10.0.0.3:7000", Fresh: true},
	}}
}

func sampleMessages() []message {
	g := sampleGen()
	return []message{
		&proposal{ID: 8, Base: 7, Coordinator: "a-1", Ring: g.Ring},
		&ack{OK: true, Name: "b-2", Promised: 8, Step: 1200, Cur: g},
		&ack{Reason: "already promised generation 9", Name: "b-2", Promised: 9},
		&commit{Gen: g},
		&reply{OK: true},
		&reply{Reason: "stale"},
		&abort{ID: 9, Coordinator: "a-1"},
		&report{Gen: 7, Reporter: "a-1", Peer: "b-2", Err: "allreduce: connection reset"},
		&statusRequest{},
		&Status{Self: "a-1", Coordinator: "a-1", Gen: g, Members: []MemberInfo{
			{Name: "a-1", Gossip: "10.0.0.1:7946", Meta: Meta{GRPCAddr: "10.0.0.1:7000", State: StateTraining, Gen: 7, Backend: "cuda", Data: "fineweb-v1", Version: "v0.1.0"}},
		}, Info: StatusInfo{Step: 1234, Loss: 3.25, TokensPerSec: 51234.5, Updated: time.Unix(1700000000, 5)}},
	}
}

// fresh returns a zero message of the same type as m.
func fresh(m message) message { return reflect.New(reflect.TypeOf(m).Elem()).Interface().(message) }

func TestMessagesRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		b := m.marshal()
		got := fresh(m)
		if err := got.unmarshal(b); err != nil {
			t.Fatalf("%T: %v", m, err)
		}
		if !reflect.DeepEqual(normalize(got), normalize(m)) {
			t.Errorf("%T round trip:\n got %+v\nwant %+v", m, got, m)
		}
		// Every strict prefix is refused, and so is a trailing byte.
		for i := range b {
			if err := fresh(m).unmarshal(b[:i]); err == nil {
				t.Errorf("%T: prefix of %d/%d bytes accepted", m, i, len(b))
			}
		}
		if err := fresh(m).unmarshal(append(bytes.Clone(b), 0)); err == nil {
			t.Errorf("%T: trailing byte accepted", m)
		}
	}
}

// normalize makes nil and empty slices compare equal.
func normalize(m message) message {
	if s, ok := m.(*Status); ok && len(s.Members) == 0 {
		c := *s
		c.Members = nil
		return &c
	}
	return m
}

func TestMessagesRefuseBadInput(t *testing.T) {
	g := sampleGen()
	unsorted := g.clone()
	unsorted.Ring[0], unsorted.Ring[1] = unsorted.Ring[1], unsorted.Ring[0]
	dup := g.clone()
	dup.Ring[1].Name = dup.Ring[0].Name
	tests := []struct {
		name string
		msg  message
		into message
		want string
	}{
		{"wrong kind", &reply{OK: true}, &commit{}, "kind"},
		{"unsorted ring", &commit{Gen: unsorted}, &commit{}, "not sorted"},
		{"duplicate member", &commit{Gen: dup}, &commit{}, "duplicate"},
		{"empty ring", &proposal{ID: 2, Base: 1, Coordinator: "a"}, &proposal{}, "empty ring"},
		{"base not below id", &proposal{ID: 2, Base: 2, Coordinator: "a", Ring: g.Ring}, &proposal{}, "base"},
		{"generation zero", &commit{Gen: Generation{Coordinator: "a", Ring: g.Ring}}, &commit{}, "number 0"},
		{"no reporter", &report{Gen: 1}, &report{}, "reporter"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.into.unmarshal(tc.msg.marshal())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	// Hand-made hostile bytes.
	for name, b := range map[string][]byte{
		"empty":          nil,
		"bad version":    {9, kindCommit},
		"huge ring":      {wireVersion, kindProposal, 2, 1, 1, 'a', 0xff, 0xff, 0xff, 0xff, 0x0f},
		"huge string":    {wireVersion, kindReport, 1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"overlong int":   {wireVersion, kindReport, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"bad bool":       {wireVersion, kindReply, 2, 0},
		"truncated f64":  append((&Status{}).marshal()[:5], 1, 2, 3),
		"meta in status": {wireVersion, kindStatus, 0, 0, 0, 0, 0, 0, 0, 1, 1, 'a', 0, 2, 7, 7},
	} {
		for _, m := range sampleMessages() {
			if err := fresh(m).unmarshal(b); err == nil {
				t.Errorf("%s: %T accepted %x", name, m, b)
			}
		}
	}
}

func TestMetaRoundTripAndLimits(t *testing.T) {
	m := Meta{GRPCAddr: "10.1.2.3:7000", State: StateReady, Gen: 12, Backend: "cpu", Data: "tinystories", Version: "v1"}
	got, err := decodeMeta(m.encode())
	if err != nil || got != m {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for name, b := range map[string][]byte{
		"empty":       nil,
		"version 2":   {2, 1, 0, 0, 0, 0, 0},
		"state 0":     {metaVersion, 0, 0, 0, 0, 0, 0},
		"state 9":     {metaVersion, 9, 0, 0, 0, 0, 0},
		"truncated":   m.encode()[:6],
		"extra bytes": append(m.encode(), 1),
	} {
		if _, err := decodeMeta(b); err == nil {
			t.Errorf("%s: accepted %x", name, b)
		}
	}
	// The largest metadata a config may produce fits memberlist's limit,
	// and a config that would exceed it is refused.
	long := strings.Repeat("x", 200)
	cfg := Config{GRPCAddr: "h:1", Backend: long, Data: long}
	if _, err := cfg.withDefaults(); err != nil {
		t.Errorf("450-byte metadata refused: %v", err)
	}
	cfg.Version = long
	cfg.GRPCAddr = long[:100] + ":1"
	if _, err := cfg.withDefaults(); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("oversized metadata: got %v", err)
	}
}

// TestDataTagHidesPaths: the dataset a member announces in the gossip (and
// `trainer status` shows) is a tag, never the directory.
func TestDataTagHidesPaths(t *testing.T) {
	c, err := Config{GRPCAddr: "127.0.0.1:1", Data: "/secret/corpus/dir"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(c.Data, "secret") || !strings.HasPrefix(c.Data, "data-") || len(c.Data) != 13 {
		t.Errorf("announced data %q, want a data-XXXXXXXX tag", c.Data)
	}
	if DataTag(c.Data) != c.Data || DataTag("/secret/corpus/dir") != c.Data || DataTag("other") == c.Data {
		t.Error("DataTag is not a stable, idempotent tag")
	}
	if DataTag("") != "" {
		t.Error("no dataset must stay empty (members that serve no shards)")
	}
}

// FuzzControlMessage feeds arbitrary bytes to every control-message
// decoder (and the metadata decoder). Decoding must never panic, and what
// decodes must re-encode to something that decodes to the same value.
func FuzzControlMessage(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(m.marshal())
	}
	f.Add(Meta{GRPCAddr: "a:1", State: StateReady}.encode())
	f.Add([]byte{})
	f.Add([]byte{wireVersion, kindProposal, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range sampleMessages() {
			got := fresh(m)
			if got.unmarshal(b) != nil {
				continue
			}
			again := fresh(m)
			if err := again.unmarshal(got.marshal()); err != nil {
				t.Fatalf("%T: re-encoded message refused: %v", m, err)
			}
			if !bytes.Equal(again.marshal(), got.marshal()) {
				t.Fatalf("%T: re-encoding changed the message", m)
			}
		}
		if meta, err := decodeMeta(b); err == nil {
			again, err := decodeMeta(meta.encode())
			if err != nil || again != meta {
				t.Fatalf("meta re-encoding: %+v, %v", again, err)
			}
		}
	})
}

// TestForgedCountsAllocateNothing: a list length within the limit but
// beyond the bytes that follow is refused before the list is allocated.
func TestForgedCountsAllocateNothing(t *testing.T) {
	count := binary.AppendUvarint(nil, maxMembers)
	forged := map[string][]byte{
		// proposal: id, base, coordinator "a", then the ring's length.
		"proposal ring": append([]byte{wireVersion, kindProposal, 1, 0, 1, 'a'}, count...),
		// commit: id, base, start, coordinator "a", ring length.
		"commit ring": append([]byte{wireVersion, kindCommit, 1, 0, 0, 1, 'a'}, count...),
		// status: self, coordinator, an empty generation, member count.
		"status members": append([]byte{wireVersion, kindStatus, 0, 0, 0, 0, 0, 0, 0}, count...),
	}
	for name, b := range forged {
		var m message
		switch b[1] {
		case kindProposal:
			m = &proposal{}
		case kindCommit:
			m = &commit{}
		default:
			m = &Status{}
		}
		if err := m.unmarshal(b); err == nil || !strings.Contains(err.Error(), "bytes left") {
			t.Fatalf("%s: got %v, want a refusal for the bytes left", name, err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range 100 {
			m.unmarshal(b)
		}
		runtime.ReadMemStats(&after)
		// An allocated list would take 100 × 4096 × (at least 40 bytes).
		if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
			t.Errorf("%s: 100 refusals allocated %d bytes", name, n)
		}
	}
}
