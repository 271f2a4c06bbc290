package e2e

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// The customer API's OpenAPI document, loaded once; every customer-API
// response in this suite is validated against it (issue 9).
var (
	apiDocOnce   sync.Once
	apiDocRouter routers.Router
	apiDocErr    error
)

func loadAPIDoc() (routers.Router, error) {
	apiDocOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromFile("../docs/openapi.yaml")
		if err != nil {
			apiDocErr = err
			return
		}
		if err := doc.Validate(context.Background()); err != nil {
			apiDocErr = err
			return
		}
		doc.Servers = nil // test servers listen on random loopback ports
		apiDocRouter, apiDocErr = gorillamux.NewRouter(doc)
	})
	return apiDocRouter, apiDocErr
}

// checkAPIResponse validates a customer-API answer (status, headers, body)
// against docs/openapi.yaml. Unknown paths and methods, which the document
// rightly does not list, must answer 404 or 405.
func checkAPIResponse(t *testing.T, req *http.Request, status int, header http.Header, body []byte) {
	if !strings.HasPrefix(req.URL.Path, "/api/v1/") {
		return
	}
	router, err := loadAPIDoc()
	if err != nil {
		t.Errorf("docs/openapi.yaml: %v", err)
		return
	}
	route, params, err := router.FindRoute(req)
	if err != nil {
		if status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
			t.Errorf("%s %s answered %d but docs/openapi.yaml has no such operation", req.Method, req.URL.Path, status)
		}
		return
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
	out.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		t.Errorf("%s %s %d does not match docs/openapi.yaml: %v\nbody: %s", req.Method, req.URL.Path, status, err, body)
	}
}

func TestOpenAPIDocument(t *testing.T) {
	if _, err := loadAPIDoc(); err != nil {
		t.Fatal(err)
	}
}
