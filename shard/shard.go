// Package shard is difftrain's token-shard format: Arrow IPC files holding
// packed training sequences, a JSON manifest describing a dataset of them,
// validation on open, and the transports that move shards between machines
// (HTTP download and an Arrow Flight server and client).
//
// A shard is an Arrow IPC file with one column, "tokens", of non-nullable
// fixed-size lists of token ids (uint16 when the vocabulary fits, int32
// otherwise). The schema metadata records the format version, sequence
// length, vocabulary size, tokenizer name and the rows per record batch, so
// sequence i of a shard lives in record batch i/BatchRows.
package shard

import (
	"fmt"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"
)

// Version is the shard and manifest format version this package writes and
// reads.
const Version = 1

// Column is the name of the single column of a shard.
const Column = "tokens"

// Schema metadata keys.
const (
	keyVersion   = "difftrain.version"
	keySeqLen    = "difftrain.seq_len"
	keyVocab     = "difftrain.vocab"
	keyTokenizer = "difftrain.tokenizer"
	keyBatchRows = "difftrain.batch_rows"
)

// Meta describes the contents of a shard: what its schema metadata records.
type Meta struct {
	SeqLen    int    // tokens per sequence
	Vocab     int    // token ids are < Vocab
	Tokenizer string // name of the tokenizer that produced the ids
	BatchRows int    // sequences per record batch (the last may hold fewer)
}

// maxSeqLen bounds the sequence length so that a row always fits in one
// Flight message and offsets cannot overflow.
const maxSeqLen = 1 << 20

// Validate checks that m describes a shard this package can write and read.
func (m Meta) Validate() error {
	switch {
	case m.SeqLen <= 0 || m.SeqLen > maxSeqLen:
		return fmt.Errorf("sequence length %d out of range [1, %d]", m.SeqLen, maxSeqLen)
	case m.Vocab <= 0 || int64(m.Vocab) > 1<<31-1:
		return fmt.Errorf("vocabulary size %d out of range", m.Vocab)
	case m.Tokenizer == "":
		return fmt.Errorf("empty tokenizer name")
	case m.BatchRows <= 0 || int64(m.BatchRows)*int64(m.SeqLen) > 1<<28:
		return fmt.Errorf("batch rows %d out of range for sequence length %d", m.BatchRows, m.SeqLen)
	}
	return nil
}

// TokenBytes is the size of one stored token id: 2 when the vocabulary fits
// in uint16, else 4.
func (m Meta) TokenBytes() int {
	if m.Vocab <= 1<<16 {
		return 2
	}
	return 4
}

// elemType is the Arrow type of one token id.
func (m Meta) elemType() arrow.DataType {
	if m.TokenBytes() == 2 {
		return arrow.PrimitiveTypes.Uint16
	}
	return arrow.PrimitiveTypes.Int32
}

// Schema returns the Arrow schema of a shard described by m.
func (m Meta) Schema() *arrow.Schema {
	md := arrow.NewMetadata(
		[]string{keyVersion, keySeqLen, keyVocab, keyTokenizer, keyBatchRows},
		[]string{strconv.Itoa(Version), strconv.Itoa(m.SeqLen), strconv.Itoa(m.Vocab), m.Tokenizer, strconv.Itoa(m.BatchRows)},
	)
	typ := arrow.FixedSizeListOfNonNullable(int32(m.SeqLen), m.elemType())
	return arrow.NewSchema([]arrow.Field{{Name: Column, Type: typ, Nullable: false}}, &md)
}

// DefaultBatchRows returns the rows per record batch that keeps a batch near
// 1 MiB, so that a batch is one moderate gRPC message when streamed.
func DefaultBatchRows(seqLen, tokenBytes int) int {
	if seqLen <= 0 || tokenBytes <= 0 {
		return 1
	}
	return max(1, (1<<20)/(seqLen*tokenBytes))
}

// metaFromSchema parses and checks the schema of a shard.
func metaFromSchema(s *arrow.Schema) (Meta, error) {
	var m Meta
	if s == nil {
		return m, fmt.Errorf("no schema")
	}
	if s.NumFields() != 1 {
		return m, fmt.Errorf("schema has %d fields, want 1 (%q)", s.NumFields(), Column)
	}
	f := s.Field(0)
	if f.Name != Column {
		return m, fmt.Errorf("schema field is %q, want %q", f.Name, Column)
	}
	md := s.Metadata()
	get := func(k string) (string, error) {
		v, ok := md.GetValue(k)
		if !ok {
			return "", fmt.Errorf("schema metadata lacks %q", k)
		}
		return v, nil
	}
	num := func(k string) (int, error) {
		v, err := get(k)
		if err != nil {
			return 0, err
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, fmt.Errorf("schema metadata %q = %q is not an integer", k, v)
		}
		return n, nil
	}
	ver, err := num(keyVersion)
	if err != nil {
		return m, err
	}
	if ver != Version {
		return m, fmt.Errorf("format version %d, this build reads version %d", ver, Version)
	}
	if m.SeqLen, err = num(keySeqLen); err != nil {
		return m, err
	}
	if m.Vocab, err = num(keyVocab); err != nil {
		return m, err
	}
	if m.BatchRows, err = num(keyBatchRows); err != nil {
		return m, err
	}
	if m.Tokenizer, err = get(keyTokenizer); err != nil {
		return m, err
	}
	if err := m.Validate(); err != nil {
		return m, fmt.Errorf("schema metadata: %w", err)
	}
	want := arrow.FixedSizeListOfNonNullable(int32(m.SeqLen), m.elemType())
	if !arrow.TypeEqual(f.Type, want) {
		return m, fmt.Errorf("column %q has type %s, want %s", Column, f.Type, want)
	}
	if f.Nullable {
		return m, fmt.Errorf("column %q is nullable", Column)
	}
	return m, nil
}
