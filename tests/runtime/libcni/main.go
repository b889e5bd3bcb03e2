// libcni-driver: a CNI runtime made of nothing but the reference Go library
// (github.com/containernetworking/cni/libcni, as Debian packages it), used by
// test_libcni.py to run a network configuration list through the calls a
// runtime makes: VERSION checks, ADD, CHECK, the cached result, DEL twice.
//
// Usage: libcni-driver -conflist FILE -netns PATH -id ID -ifname IF
//
//	-path DIR[:DIR...] -cache DIR [-caps JSON] [-hold] [-add-only]
//
// It prints one JSON report on stdout; every step's error is reported, not
// fatal, so the test can compare two plugins step by step.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// Step is one call's outcome.
type Step struct {
	OK bool `json:"ok"`
	// the result as the plugin answered it (its own cniVersion) ...
	Result json.RawMessage `json:"result,omitempty"`
	// ... and converted by libcni to 1.0.0, the form runtimes read
	Current *types100.Result `json:"current,omitempty"`
	Error   *ErrorReport     `json:"error,omitempty"`
}

// ErrorReport is a plugin's CNI error (code, msg, details) or libcni's own.
type ErrorReport struct {
	Code    uint   `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details,omitempty"`
	Text    string `json:"text"`
}

type report struct {
	Version  string   `json:"cniVersion"`
	Validate Step     `json:"validate"`
	Versions []string `json:"validateTypes,omitempty"`
	Add      Step     `json:"add"`
	Check    Step     `json:"check"`
	Cached   Step     `json:"cached"`
	Del1     Step     `json:"del1"`
	Del2     Step     `json:"del2"`
	// after DEL, libcni must have dropped its cache entry
	CachedAfterDel Step `json:"cachedAfterDel"`
}

func failed(err error) Step {
	rep := &ErrorReport{Text: err.Error()}
	if e, ok := err.(*types.Error); ok {
		rep.Code, rep.Msg, rep.Details = e.Code, e.Msg, e.Details
	}
	return Step{OK: false, Error: rep}
}

func withResult(res types.Result, err error) Step {
	if err != nil {
		return failed(err)
	}
	if res == nil {
		return Step{OK: true}
	}
	raw, err := json.Marshal(res)
	if err != nil {
		return failed(err)
	}
	cur, err := types100.NewResultFromResult(res)
	if err != nil {
		return failed(fmt.Errorf("libcni cannot convert the result to 1.0.0: %w", err))
	}
	return Step{OK: true, Result: raw, Current: cur}
}

func done(err error) Step {
	if err != nil {
		return failed(err)
	}
	return Step{OK: true}
}

func main() {
	conflist := flag.String("conflist", "", "network configuration list (JSON file)")
	netns := flag.String("netns", "", "CNI_NETNS")
	id := flag.String("id", "", "CNI_CONTAINERID")
	ifname := flag.String("ifname", "eth0", "CNI_IFNAME")
	path := flag.String("path", "", "CNI_PATH: plugin directories, ':'-separated")
	cache := flag.String("cache", "", "libcni's cache directory")
	caps := flag.String("caps", "{}", "capability arguments (runtimeConfig), JSON")
	hold := flag.Bool("hold", false, "after ADD: print HOLD on stderr, wait for a line on stdin")
	addOnly := flag.Bool("add-only", false, "ADD and nothing else (a runtime that gave up)")
	flag.Parse()
	if *conflist == "" || *netns == "" || *id == "" || *path == "" || *cache == "" {
		fmt.Fprintln(os.Stderr, "usage: libcni-driver -conflist F -netns P -id ID -path D -cache D")
		os.Exit(2)
	}
	list, err := libcni.ConfListFromFile(*conflist)
	if err != nil {
		fmt.Fprintln(os.Stderr, "libcni cannot read the configuration:", err)
		os.Exit(2)
	}
	capArgs := map[string]interface{}{}
	if err := json.Unmarshal([]byte(*caps), &capArgs); err != nil {
		fmt.Fprintln(os.Stderr, "-caps:", err)
		os.Exit(2)
	}
	cni := libcni.NewCNIConfigWithCacheDir(strings.Split(*path, ":"), *cache, nil)
	rt := &libcni.RuntimeConf{ContainerID: *id, NetNS: *netns, IfName: *ifname,
		CapabilityArgs: capArgs}
	ctx := context.Background()

	rep := report{Version: list.CNIVersion}
	kinds, err := cni.ValidateNetworkList(ctx, list)
	rep.Validate, rep.Versions = done(err), kinds
	rep.Add = withResult(cni.AddNetworkList(ctx, list, rt))
	if *addOnly {
		out, _ := json.MarshalIndent(rep, "", " ")
		fmt.Println(string(out))
		return
	}
	if rep.Add.OK {
		rep.Check = done(cni.CheckNetworkList(ctx, list, rt))
		rep.Cached = withResult(cni.GetNetworkListCachedResult(list, rt))
	}
	if *hold { // the test looks at the attached container now
		fmt.Fprintln(os.Stderr, "HOLD")
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	}
	rep.Del1 = done(cni.DelNetworkList(ctx, list, rt))
	rep.Del2 = done(cni.DelNetworkList(ctx, list, rt))
	rep.CachedAfterDel = withResult(cni.GetNetworkListCachedResult(list, rt))
	out, _ := json.MarshalIndent(rep, "", " ")
	fmt.Println(string(out))
}
