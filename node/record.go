package node

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"time"
)

// Record is one line of a run's metrics file (RUN_DIR/metrics.jsonl),
// written by the node after every step. `trainer plot` reads it back.
type Record struct {
	Time       time.Time `json:"time"`
	Step       int64     `json:"step"` // updates completed
	Loss       float64   `json:"loss"` // the objective (spec §2.5)
	Elbo       float64   `json:"elbo"` // nats/token, noised tokens
	KL         float64   `json:"kl_loss"`
	IS         float64   `json:"is_loss"`
	PPL        float64   `json:"ppl"`
	LR         float64   `json:"lr"`
	Tokens     float64   `json:"tokens"`       // tokens processed in the step, whole ring
	TokensPerS float64   `json:"tokens_per_s"` // whole ring
	StepS      float64   `json:"step_s"`       // wall time of the step on this node
	DataS      float64   `json:"data_s"`       // reading and noising samples
	ComputeS   float64   `json:"compute_s"`    // forward, loss, backward, optimizer
	CommS      float64   `json:"comm_s"`       // waiting for the gradient allreduce after backward
	Members    int       `json:"members"`
	Generation uint64    `json:"generation"`
	WireBytes  int64     `json:"wire_bytes"` // allreduce bytes this node sent in the step
	Retries    int       `json:"retries"`    // attempts of this step that a failure aborted
	// Skipped: the loss or gradient was not finite and the update was not
	// applied (--max-bad-steps).
	Skipped bool `json:"skipped"`
}

// MarshalJSON writes the record as one JSON object with a NaN or infinite
// value as null: a step whose loss went NaN is kept in the metrics file.
func (r Record) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	v, t := reflect.ValueOf(r), reflect.TypeFor[Record]()
	for i := range t.NumField() {
		var x any = v.Field(i).Interface()
		if f, ok := x.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
			x = nil
		}
		val, err := json.Marshal(x)
		if err != nil {
			return nil, fmt.Errorf("record field %s: %w", t.Field(i).Name, err)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:", jsonName(t.Field(i)))
		b.Write(val)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads a record written by MarshalJSON: a null number is NaN.
func (r *Record) UnmarshalJSON(data []byte) error {
	type plain Record
	if err := json.Unmarshal(data, (*plain)(r)); err != nil {
		return err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	v, t := reflect.ValueOf(r).Elem(), reflect.TypeFor[Record]()
	for i := range t.NumField() {
		if t.Field(i).Type.Kind() != reflect.Float64 {
			continue
		}
		if val, ok := raw[jsonName(t.Field(i))]; ok && string(bytes.TrimSpace(val)) == "null" {
			v.Field(i).SetFloat(math.NaN())
		}
	}
	return nil
}

// jsonName is a field's name in the JSON of a Record.
func jsonName(f reflect.StructField) string {
	name, _, _ := bytes.Cut([]byte(f.Tag.Get("json")), []byte(","))
	if len(name) == 0 {
		return f.Name
	}
	return string(name)
}

// ReadRecords parses a metrics.jsonl stream, naming the line of any error.
func ReadRecords(r io.Reader) ([]Record, error) {
	var out []Record
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var rec Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return out, fmt.Errorf("metrics line %d: %w", line, err)
		}
		out = append(out, rec)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("metrics: %w", err)
	}
	return out, nil
}

// ReadRecordsFile reads RUN_DIR/metrics.jsonl or the given file.
func ReadRecordsFile(path string) ([]Record, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = path + "/metrics.jsonl"
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	recs, err := ReadRecords(f)
	if err != nil {
		return recs, fmt.Errorf("%s: %w", path, err)
	}
	return recs, nil
}

// RecordWriter appends records to a metrics file, one JSON object a line.
type RecordWriter struct {
	f   *os.File
	enc *json.Encoder
}

// CreateRecords opens (appending) path for records.
func CreateRecords(path string) (*RecordWriter, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("metrics file: %w", err)
	}
	return &RecordWriter{f: f, enc: json.NewEncoder(f)}, nil
}

// Write appends one record.
func (w *RecordWriter) Write(r Record) error { return w.enc.Encode(r) }

// Close closes the file.
func (w *RecordWriter) Close() error { return w.f.Close() }

// StepKey names a step record: the step (updates completed) and the
// generation that completed it.
type StepKey struct {
	Step int64
	Gen  uint64
}

// Orphans finds, in the records of every node of a run, the steps that only
// some members of a generation completed while the step was completed again
// in another generation. A member killed or cut off right after its last
// gradient chunk arrived applies a step its ring-mates do not; its update
// dies with it (or is replaced by the state it takes when it comes back),
// and the others redo the step in a new ring. A step complete in two
// generations is no orphan: checks report it.
func Orphans(nodes [][]Record) map[StepKey]bool {
	type tally struct{ count, members int }
	byStep := map[int64]map[uint64]*tally{}
	for _, recs := range nodes {
		for _, r := range recs {
			g := byStep[r.Step]
			if g == nil {
				g = map[uint64]*tally{}
				byStep[r.Step] = g
			}
			if g[r.Generation] == nil {
				g[r.Generation] = &tally{}
			}
			g[r.Generation].count++
			g[r.Generation].members = max(g[r.Generation].members, r.Members)
		}
	}
	out := map[StepKey]bool{}
	for step, gens := range byStep {
		var complete []uint64
		var newest uint64
		for g, t := range gens {
			newest = max(newest, g)
			if t.count >= t.members {
				complete = append(complete, g)
			}
		}
		if len(gens) < 2 || len(complete) > 1 {
			continue
		}
		keep := newest
		if len(complete) == 1 {
			keep = complete[0]
		}
		for g := range gens {
			if g != keep {
				out[StepKey{step, g}] = true
			}
		}
	}
	return out
}
