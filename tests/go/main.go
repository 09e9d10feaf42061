// A Go pipeline that calls crossinfer through its expansion service, as any
// Beam SDK may (docs/wire-contract.md): rows in, results and failures out.
//
//	crossinfer-go-e2e --input rows.jsonl --spec spec.json --urn URN \
//	    --expansion_addr HOST:PORT --results OUT --failures OUT \
//	    --runner=universal --endpoint=JOB_HOST:PORT --environment_type=LOOPBACK
//
// Each input line is {"id": 1, "key": "sklearn", "features": [...], "nan_at": -1}
// (nan_at >= 0 puts a NaN at that index: JSON has no NaN). Each result line is
// {"id", "model", "path", "label", "score", "inference"}, each failure line
// {"id", "node", "error"}. tests/test_go_pipeline.py runs it on Prism and on
// Beam's Python job server.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"math"
	"os"
	"reflect"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/typex"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/textio"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"

	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/local"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/universal"
)

var (
	input         = flag.String("input", "", "JSON lines of input rows")
	specPath      = flag.String("spec", "", "the inference spec document (JSON)")
	urn           = flag.String("urn", "", "the crossinfer URN for the spec's root node kind")
	expansionAddr = flag.String("expansion_addr", "", "the crossinfer expansion service")
	results       = flag.String("results", "", "where to write result lines")
	failures      = flag.String("failures", "", "where to write failure lines")
)

// Digit is an input row. Its schema (id INT64, key STRING, features
// ARRAY<DOUBLE>) crosses to the service as a Beam Row.
type Digit struct {
	ID       int64     `beam:"id"`
	Key      string    `beam:"key"`
	Features []float64 `beam:"features"`
}

// Result is a row of the "results" output: the input fields, then the outputs
// (nullable fields are pointers). It is the declared output type; the Go SDK
// decodes the rows into a struct it makes from the service's schema (same
// fields, another type), so the DoFns below read them by field name.
type Result struct {
	ID        int64      `beam:"id"`
	Key       string     `beam:"key"`
	Features  []float64  `beam:"features"`
	Model     string     `beam:"model"`
	Path      string     `beam:"path"`
	Inference []float64  `beam:"inference"`
	Label     *int64     `beam:"label"`
	Score     *float64   `beam:"score"`
	Labels    *[]int64   `beam:"labels"`
	Scores    *[]float64 `beam:"scores"`
}

// Failure is a row of the "failures" output.
type Failure struct {
	Element Digit  `beam:"element"`
	Node    string `beam:"node"`
	Error   string `beam:"error"`
}

// payload is the v1 payload Row (the optional fields left out).
type payload struct {
	Spec     string `beam:"spec"`
	KeyField string `beam:"key_field"`
}

type inputLine struct {
	ID       int64     `json:"id"`
	Key      string    `json:"key"`
	Features []float64 `json:"features"`
	NaNAt    int       `json:"nan_at"`
}

// readRows reads the input rows (in the launching process: the pipeline
// starts from beam.CreateList).
func readRows(path string) ([]Digit, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rows []Digit
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var in inputLine
		if err := json.Unmarshal([]byte(line), &in); err != nil {
			return nil, err
		}
		if in.NaNAt >= 0 && in.NaNAt < len(in.Features) {
			in.Features[in.NaNAt] = math.NaN()
		}
		rows = append(rows, Digit{ID: in.ID, Key: in.Key, Features: in.Features})
	}
	return rows, nil
}

// fields reads a decoded row's fields by their schema names (see Result).
func fields(row any, names ...string) map[string]any {
	v := reflect.ValueOf(row)
	byName := map[string]any{}
	for i := 0; i < v.NumField(); i++ {
		byName[v.Type().Field(i).Tag.Get("beam")] = v.Field(i).Interface()
	}
	out := map[string]any{}
	for _, name := range names {
		out[name] = byName[name]
	}
	return out
}

func formatResult(r beam.X) (string, error) {
	out, err := json.Marshal(fields(r, "id", "model", "path", "label", "score", "inference"))
	return string(out), err
}

func formatFailure(f beam.X) (string, error) {
	row := fields(f, "element", "node", "error")
	out, err := json.Marshal(map[string]any{"id": fields(row["element"], "id")["id"],
		"node": row["node"], "error": row["error"]})
	return string(out), err
}

func init() {
	register.Function1x2(formatResult)
	register.Function1x2(formatFailure)
	beam.RegisterType(reflect.TypeOf((*Digit)(nil)).Elem())
}

func main() {
	flag.Parse()
	beam.Init()
	spec, err := os.ReadFile(*specPath)
	if err != nil {
		log.Fatalf("reading the spec: %v", err)
	}
	digits, err := readRows(*input)
	if err != nil {
		log.Fatalf("reading the input: %v", err)
	}
	p, s := beam.NewPipelineWithRoot()
	rows := beam.CreateList(s, digits)
	outputs := beam.CrossLanguage(s, *urn,
		beam.CrossLanguagePayload(payload{Spec: string(spec), KeyField: "key"}),
		*expansionAddr, beam.UnnamedInput(rows), map[string]typex.FullType{
			"results":  typex.New(reflect.TypeOf(Result{})),
			"failures": typex.New(reflect.TypeOf(Failure{})),
		})
	textio.Write(s, *results, beam.ParDo(s, formatResult, outputs["results"]))
	textio.Write(s, *failures, beam.ParDo(s, formatFailure, outputs["failures"]))
	if err := beamx.Run(context.Background(), p); err != nil {
		log.Fatalf("the pipeline failed: %v", err)
	}
}
