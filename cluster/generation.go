package cluster

import (
	"fmt"
	"slices"
	"strings"
)

// Member is one place in a generation's ring.
type Member struct {
	Name string `json:"name"` // unique per process incarnation
	Addr string `json:"addr"` // gRPC address
	// Step is the step boundary the member had reached when it acknowledged
	// the generation: it had completed every step before Step. Members
	// whose Step is below the generation's Start must take state from a
	// member whose Step equals Start before training.
	Step uint64 `json:"step"`
	// Fresh is true when the member was not in the previous generation
	// (a joiner): its state is not trusted and it must take state from a
	// member that was, whatever its Step says.
	Fresh bool `json:"fresh,omitempty"`
}

// Generation is a committed ring: the ordered members that train together
// from step Start on. Generations are numbered from 1; the zero Generation
// means none has been committed yet.
type Generation struct {
	ID          uint64   `json:"id"`          // generation number g, carried by every allreduce message
	Base        uint64   `json:"base"`        // the generation this one replaced (0 for the first)
	Start       uint64   `json:"start"`       // first step the ring runs
	Coordinator string   `json:"coordinator"` // member that proposed and committed it
	Ring        []Member `json:"ring"`        // ring order, sorted by name
}

// Rank returns the position of name in the ring, or -1.
func (g Generation) Rank(name string) int {
	for i, m := range g.Ring {
		if m.Name == name {
			return i
		}
	}
	return -1
}

// Has reports whether name is in the ring.
func (g Generation) Has(name string) bool { return g.Rank(name) >= 0 }

// Names returns the ring's member names in ring order.
func (g Generation) Names() []string {
	out := make([]string, len(g.Ring))
	for i, m := range g.Ring {
		out[i] = m.Name
	}
	return out
}

func (g Generation) String() string {
	return fmt.Sprintf("gen %d start %d ring [%s]", g.ID, g.Start, strings.Join(g.Names(), " "))
}

func (g Generation) clone() Generation {
	g.Ring = slices.Clone(g.Ring)
	return g
}

// validate checks what a peer sent: a non-empty ring of distinct, named,
// addressed members sorted by name, and a number above its base.
func (g Generation) validate() error {
	if g.ID == 0 {
		return fmt.Errorf("generation number 0")
	}
	if g.Base >= g.ID {
		return fmt.Errorf("generation %d: base %d not below it", g.ID, g.Base)
	}
	if err := validateRing(g.Ring); err != nil {
		return fmt.Errorf("generation %d: %w", g.ID, err)
	}
	if g.Coordinator == "" {
		return fmt.Errorf("generation %d: no coordinator", g.ID)
	}
	return nil
}

func validateRing(ring []Member) error {
	if len(ring) == 0 {
		return fmt.Errorf("empty ring")
	}
	for i, m := range ring {
		if m.Name == "" || m.Addr == "" {
			return fmt.Errorf("ring member %d: empty name or address", i)
		}
		if i > 0 && ring[i-1].Name >= m.Name {
			return fmt.Errorf("ring member %d (%q): not sorted or duplicate", i, m.Name)
		}
	}
	return nil
}

// quorum reports whether ring may follow base: it must hold a majority of
// base's members and at least minNodes members. The first generation (empty
// base) needs only minNodes. Two rings that both pass for the same base share
// at least one member of base, and a member commits at most one of them.
func quorum(ring []Member, base []Member, minNodes int) bool {
	if len(ring) < max(minNodes, 1) {
		return false
	}
	kept := 0
	for _, m := range base {
		if slices.ContainsFunc(ring, func(r Member) bool { return r.Name == m.Name }) {
			kept++
		}
	}
	return kept > len(base)/2 || len(base) == 0
}

func encodeMembers(e *encoder, ms []Member) {
	e.uvarint(uint64(len(ms)))
	for _, m := range ms {
		e.str(m.Name)
		e.str(m.Addr)
		e.uvarint(m.Step)
		e.bool1(m.Fresh)
	}
}

func decodeMembers(d *decoder, field string) []Member {
	n := d.count(field, maxMembers, 4)
	if n == 0 {
		return nil
	}
	ms := make([]Member, n)
	for i := range ms {
		ms[i].Name = d.str(field+" name", maxName)
		ms[i].Addr = d.str(field+" address", maxName)
		ms[i].Step = d.uvarint(field + " step")
		ms[i].Fresh = d.bool1(field + " fresh")
	}
	return ms
}

func encodeGeneration(e *encoder, g Generation) {
	e.uvarint(g.ID)
	e.uvarint(g.Base)
	e.uvarint(g.Start)
	e.str(g.Coordinator)
	encodeMembers(e, g.Ring)
}

func decodeGeneration(d *decoder) Generation {
	var g Generation
	g.ID = d.uvarint("generation id")
	g.Base = d.uvarint("generation base")
	g.Start = d.uvarint("generation start")
	g.Coordinator = d.str("coordinator", maxName)
	g.Ring = decodeMembers(d, "ring")
	return g
}

func sortMembers(ms []Member) {
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
}
