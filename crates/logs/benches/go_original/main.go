// The Go original's log service, rebuilt from its description in shared/PROTOCOL.md as the
// reference of the log bench's seed section (`crates/logs/benches/logs.rs`): `POST /log` appends
// the body as one line to a file through the standard `log` package, whose writer opens the file,
// appends and closes it for every line, without fsync; 400 for an empty body, 405 for other
// methods. It listens on -listen (port 0 by default) and prints its address.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
)

// fileLog appends every write to the file named by it, as the original's writer does.
type fileLog string

func (path fileLog) Write(data []byte) (int, error) {
	file, err := os.OpenFile(string(path), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0600)
	if err != nil {
		return 0, err
	}
	defer file.Close()
	return file.Write(data)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	path := flag.String("file", "app.log", "file the lines are appended to")
	flag.Parse()
	lines := log.New(fileLog(*path), "go: ", log.LstdFlags)
	http.HandleFunc("/log", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		message, err := io.ReadAll(r.Body)
		if err != nil || len(message) == 0 {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		lines.Printf("%v\n", string(message))
	})
	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on http://%s\n", listener.Addr())
	log.Fatal(http.Serve(listener, nil))
}
