package main

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// allowedImports is the layout of docs/ARCHITECTURE.md ("Packages and the
// direction of imports"): for each package of the module, the packages of
// the module and the NATS libraries its non-test code may import. Anything
// else (an import upwards or sideways, nats-server outside cmd/strand and
// the test server, the NATS client outside eventlog) fails the test.
var allowedImports = map[string][]string{
	"strand/eventlog/matrix":           {},
	"strand/eventlog":                  {"strand/eventlog/matrix", "github.com/nats-io/nats.go"},
	"strand/eventlog/logtest":          {"strand/eventlog", "strand/eventlog/matrix", "github.com/nats-io/nats.go", "github.com/nats-io/nats-server/v2"},
	"strand/projector/store":           {"strand/eventlog", "strand/eventlog/matrix"},
	"strand/projector/store/storetest": {"strand/projector/store", "strand/eventlog", "strand/eventlog/matrix"},
	"strand/projector":                 {"strand/eventlog", "strand/eventlog/matrix", "strand/projector/store"},
	"strand/sessions":                  {"strand/eventlog", "strand/eventlog/matrix", "strand/projector/store"},
	"strand/syncstream":                {"strand/eventlog", "strand/eventlog/matrix", "strand/projector/store", "strand/sessions"},
	"strand/api/outbound":              {},
	"strand/api/appservice":            {"strand/eventlog", "strand/eventlog/matrix", "strand/projector/store"},
	"strand/api":                       {"strand/api/appservice", "strand/api/outbound", "strand/eventlog", "strand/eventlog/matrix", "strand/projector/store", "strand/sessions"},
	"strand/api/pushgateway":           {"strand/api/outbound", "strand/eventlog", "strand/eventlog/matrix", "strand/projector/store"},
	"strand/api/apitest": {"strand/api", "strand/api/appservice", "strand/syncstream", "strand/sessions", "strand/projector", "strand/projector/store", "strand/projector/store/storetest",
		"strand/eventlog", "strand/eventlog/matrix", "strand/eventlog/logtest", "github.com/nats-io/nats.go", "github.com/nats-io/nats-server/v2"},
	"strand/cmd/strand/bench": {},
}

// watched are the imports the rules speak about: the module's own
// packages and the NATS libraries.
func watched(imp string) bool {
	return strings.HasPrefix(imp, "strand/") || strings.HasPrefix(imp, "github.com/nats-io/nats")
}

// permitted reports whether imp is in allowed; a NATS library there
// covers its subpackages (nats.go/jetstream, nats-server/v2/server).
func permitted(allowed []string, imp string) bool {
	for _, a := range allowed {
		if imp == a || (!strings.HasPrefix(a, "strand/") && strings.HasPrefix(imp, a+"/")) {
			return true
		}
	}
	return false
}

func TestImportLayout(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps=false", "-json", "strand/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if p.ImportPath == "strand/cmd/strand" {
			continue // the binary wires everything
		}
		allowed, ok := allowedImports[p.ImportPath]
		if !ok {
			t.Errorf("package %s is not in the documented layout: add it to docs/ARCHITECTURE.md and allowedImports", p.ImportPath)
			continue
		}
		seen++
		for _, imp := range p.Imports {
			if watched(imp) && !permitted(allowed, imp) {
				t.Errorf("%s imports %s, against the documented layout", p.ImportPath, imp)
			}
		}
	}
	if seen < len(allowedImports) {
		t.Errorf("go list showed %d of the %d packages of the layout", seen, len(allowedImports))
	}
}
