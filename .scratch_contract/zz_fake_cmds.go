package main

import "github.com/spf13/cobra"

var fakeTrain = &cobra.Command{Use: "train", Args: cobra.NoArgs, RunE: func(*cobra.Command, []string) error { return nil }}
var fakeJoin = &cobra.Command{Use: "join", Args: cobra.NoArgs, RunE: func(*cobra.Command, []string) error { return nil }}

func init() {
	var a, b runFlags
	a.register(fakeTrain.Flags(), false)
	b.register(fakeJoin.Flags(), true)
	root.AddCommand(fakeTrain, fakeJoin)
}
