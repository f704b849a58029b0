// The Go original's registry, rebuilt from its description in docs/api.md ("The seed
// protocol") and the project's protocol notes, as the reference of the registry bench
// (`crates/rollcall/benches/registry.rs`): the fan-out and the idle memory are measured against
// it in the same run.
//
// As the original: `POST /services` appends the registration (no de-duplication), sends the
// caller the instances of the services it requires through its ServiceUpdateURL while holding
// the registry's lock, then tells every registration that requires the new service in a
// goroutine of its own, each with Go's default HTTP client (no timeouts, its default pool);
// 400 when the callback fails, but the registration is kept. `DELETE /services` removes the
// first registration with that ServiceURL and tells the dependents; 500 when there is none.
// Every 3 s each registration's heartbeat is checked, one after another, and a failing one is
// removed at once. It listens on -listen (port 0 by default) and prints its address.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"time"
)

type registration struct {
	ServiceName      string
	ServiceURL       string
	RequiredServices []string
	ServiceUpdateURL string
	HeartbeatURL     string
}

type patchEntry struct {
	Name string
	URL  string
}

type patch struct {
	Added   []patchEntry
	Removed []patchEntry
}

type registry struct {
	registrations []registration
	mutex         sync.RWMutex
}

func (r *registry) add(reg registration) error {
	r.mutex.Lock()
	r.registrations = append(r.registrations, reg)
	r.mutex.Unlock()
	err := r.sendRequiredServices(reg)
	r.notify(patch{Added: []patchEntry{{Name: reg.ServiceName, URL: reg.ServiceURL}}})
	return err
}

func (r *registry) remove(url string) error {
	r.mutex.Lock()
	for i, reg := range r.registrations {
		if reg.ServiceURL == url {
			r.registrations = append(r.registrations[:i], r.registrations[i+1:]...)
			r.mutex.Unlock()
			r.notify(patch{Removed: []patchEntry{{Name: reg.ServiceName, URL: reg.ServiceURL}}})
			return nil
		}
	}
	r.mutex.Unlock()
	return fmt.Errorf("service at URL %s not found", url)
}

// notify sends each registration the part of `full` it requires, in a goroutine per registration.
func (r *registry) notify(full patch) {
	r.mutex.RLock()
	defer r.mutex.RUnlock()
	for _, reg := range r.registrations {
		go func(reg registration) {
			for _, required := range reg.RequiredServices {
				p := patch{Added: []patchEntry{}, Removed: []patchEntry{}}
				send := false
				for _, added := range full.Added {
					if added.Name == required {
						p.Added = append(p.Added, added)
						send = true
					}
				}
				for _, removed := range full.Removed {
					if removed.Name == required {
						p.Removed = append(p.Removed, removed)
						send = true
					}
				}
				if send {
					if err := sendPatch(p, reg.ServiceUpdateURL); err != nil {
						log.Println(err)
					}
				}
			}
		}(reg)
	}
}

// sendRequiredServices sends `reg` every registered instance it requires, under the lock.
func (r *registry) sendRequiredServices(reg registration) error {
	r.mutex.RLock()
	defer r.mutex.RUnlock()
	var p patch
	for _, service := range r.registrations {
		for _, required := range reg.RequiredServices {
			if service.ServiceName == required {
				p.Added = append(p.Added, patchEntry{Name: service.ServiceName, URL: service.ServiceURL})
			}
		}
	}
	return sendPatch(p, reg.ServiceUpdateURL)
}

func sendPatch(p patch, url string) error {
	body, err := json.Marshal(p)
	if err != nil {
		return err
	}
	response, err := http.Post(url, "application/json", bytes.NewBuffer(body))
	if err != nil {
		return err
	}
	io.Copy(io.Discard, response.Body)
	response.Body.Close()
	if response.StatusCode != http.StatusOK {
		return fmt.Errorf("failed to send a patch to %s: %d", url, response.StatusCode)
	}
	return nil
}

// heartbeat checks every registration's heartbeat every `interval`, one after another; a
// failing registration is removed at once.
func (r *registry) heartbeat(interval time.Duration) {
	for {
		r.mutex.RLock()
		registrations := append([]registration(nil), r.registrations...)
		r.mutex.RUnlock()
		for _, reg := range registrations {
			response, err := http.Get(reg.HeartbeatURL)
			if err == nil {
				io.Copy(io.Discard, response.Body)
				response.Body.Close()
			}
			if err != nil || response.StatusCode != http.StatusOK {
				r.remove(reg.ServiceURL)
			}
		}
		time.Sleep(interval)
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	flag.Parse()
	reg := &registry{}
	http.HandleFunc("/services", func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPost:
			var registration registration
			if err := json.NewDecoder(r.Body).Decode(&registration); err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			if err := reg.add(registration); err != nil {
				log.Println(err)
				w.WriteHeader(http.StatusBadRequest)
			}
		case http.MethodDelete:
			url, err := io.ReadAll(r.Body)
			if err != nil {
				w.WriteHeader(http.StatusInternalServerError)
				return
			}
			if err := reg.remove(string(url)); err != nil {
				log.Println(err)
				w.WriteHeader(http.StatusInternalServerError)
			}
		default:
			w.WriteHeader(http.StatusMethodNotAllowed)
		}
	})
	go reg.heartbeat(3 * time.Second)
	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on http://%s\n", listener.Addr())
	log.Fatal(http.Serve(listener, nil))
}
