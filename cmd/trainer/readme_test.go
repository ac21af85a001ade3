package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestReadmeMatchesCLI checks that every `bin/trainer SUBCOMMAND --flag` in
// the README's examples and every flag in its table exist in the CLI, and
// that every subcommand has a short and a long help text.
func TestReadmeMatchesCLI(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	// Commands in examples, with continuation lines joined.
	text := strings.ReplaceAll(readme, "\\\n", " ")
	cmdRE := regexp.MustCompile(`bin/trainer ((?:[a-z]+ ?)+)((?:[^\n|#])*)`)
	flagRE := regexp.MustCompile(`(?:^|\s)--([a-z][a-z0-9-]*)`)
	checked := 0
	for _, m := range cmdRE.FindAllStringSubmatch(text, -1) {
		words := strings.Fields(m[1])
		cmd, rest, err := root.Find(words)
		if err != nil || cmd == root {
			t.Errorf("README runs `bin/trainer %s`, which is not a command", m[1])
			continue
		}
		args := strings.Join(rest, " ") + " " + m[2]
		for _, f := range flagRE.FindAllStringSubmatch(args, -1) {
			if lookupFlag(cmd, f[1]) == nil {
				t.Errorf("README: `bin/trainer %s` has no flag --%s", cmd.CommandPath(), f[1])
			}
			checked++
		}
	}
	// The flags table documents `trainer train`.
	train, _, _ := root.Find([]string{"train"})
	tableRE := regexp.MustCompile("(?m)^\\| `(--[^|]+)` \\|")
	for _, m := range tableRE.FindAllStringSubmatch(readme, -1) {
		for _, f := range flagRE.FindAllStringSubmatch(strings.ReplaceAll(m[1], "`", ""), -1) {
			if lookupFlag(train, f[1]) == nil {
				t.Errorf("README flag table: `trainer train` has no flag --%s", f[1])
			}
			checked++
		}
	}
	if checked < 30 {
		t.Errorf("only %d flags found in the README; the patterns no longer match it", checked)
	}
	// Every command documents itself.
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			if sub.Short == "" {
				t.Errorf("%s has no short help", sub.CommandPath())
			}
			if sub.Runnable() && sub.Long == "" && len(sub.Commands()) == 0 {
				t.Errorf("%s has no long help", sub.CommandPath())
			}
			sub.Flags().VisitAll(func(f *pflagFlag) {
				if f.Usage == "" && !f.Hidden {
					t.Errorf("%s --%s has no usage text", sub.CommandPath(), f.Name)
				}
			})
			if !strings.Contains(readme, "trainer "+sub.Name()) && c == root {
				t.Errorf("the README never mentions `trainer %s`", sub.Name())
			}
			walk(sub)
		}
	}
	walk(root)
}

type pflagFlag = pflag.Flag

func lookupFlag(c *cobra.Command, name string) *pflag.Flag {
	if f := c.Flags().Lookup(name); f != nil {
		return f
	}
	return c.InheritedFlags().Lookup(name)
}
