// An emulated CUDA driver: a libcuda.so exporting the driver API functions cudarc calls on this
// project's path, under their real names, so that the whole host path (context, streams, memory,
// module loading, launches, synchronisation) runs on a machine without a GPU.
//
// Memory is host memory and a device pointer is a host address. Modules are the PTX that NVRTC
// produced; each entry point is matched by name to the same kernel compiled for the CPU
// (table.h), and its PTX parameter list must be exactly that kernel's one parameter struct.
// Launches run synchronously with the shim's one-OS-thread-per-CUDA-thread model.
//
// Faults are detected, reported on stderr and through hnca_fake_cuda_last_fault(), and returned
// as the real error codes: writes outside an allocation (guard regions checked after every
// launch and at free), use of freed memory (freed blocks are quarantined, never reused, and
// launch arguments are scanned for pointers into them), copies that overrun an allocation,
// double frees, launches on destroyed streams, and launch configurations a GPU would refuse.
// An illegal address poisons the context, as on a GPU.
//
// Stream capture records launches into a graph instead of running them; cuGraphLaunch replays
// them with the same checks. What a real driver refuses during a capture is refused here with its
// error code, and invalidates the capture: allocation and freeing, synchronisation, copies,
// capture on the legacy NULL stream, and waiting on an event recorded outside the capture.
//
// HNCA_FAKE_CUDA_DEVICES (default 1) sets the number of devices it reports.
// HNCA_FAKE_CUDA_TRACE=PATH writes, when the process exits, one JSON object mapping the name of
// every driver API function called to the number of calls (and "graph kernel node" to the
// number of kernels that graph launches ran): the per-step call counts that the tests hold the
// GPU step to.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "table.h"

#ifdef EMU_ASAN
// Built with AddressSanitizer (build.rs's fake_cuda_asan): the guard regions and freed memory
// are poisoned, so the sanitizer reports the first read or write of either, inside the kernel.
#include <sanitizer/asan_interface.h>
#define EMU_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#else
#define EMU_POISON(p, n) ((void)(p), (void)(n))
#endif

#define API extern "C" __attribute__((visibility("default")))

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void* CUcontext;
typedef void* CUstream;
typedef void* CUevent;
typedef void* CUmodule;
typedef void* CUfunction;

enum : int {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_INVALID_PTX = 218,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_ILLEGAL_STATE = 401,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_ILLEGAL_ADDRESS = 700,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED = 900,
    CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901,
    CUDA_ERROR_STREAM_CAPTURE_ISOLATION = 905,
};

typedef void* CUgraph;
typedef void* CUgraphExec;

namespace {

const size_t GUARD = 256;
const unsigned char GUARD_BYTE = 0xA5;
const size_t MAX_STATIC_PLUS_DYNAMIC_SHARED = 48 * 1024;

struct Allocation {
    unsigned char* raw;  // GUARD bytes, then `size` bytes for the user, then GUARD bytes
    size_t size;
    bool alive;
};

struct Function;

// One launch, as recorded by a capture and replayed by a graph.
struct Launch {
    Function* function;
    unsigned grid[3], block[3];
    std::vector<unsigned char> params;
};

struct Stream {
    bool alive = true;
    bool capturing = false;
    bool invalidated = false;
    unsigned long long capture_id = 0;
    std::vector<Launch> recorded;
};

struct Event {
    unsigned long long capture_id = 0;  // the capture it was recorded in, 0 if outside any
};

struct Graph {
    std::vector<Launch> launches;
};

struct Function {
    std::string name;
    const EmuKernel* kernel;
    std::vector<size_t> param_offsets, param_sizes;
};

struct Module {
    std::vector<std::unique_ptr<Function>> functions;
};

struct State {
    std::mutex lock;
    bool initialized = false;
    CUresult sticky = CUDA_SUCCESS;  // an illegal address poisons the context
    std::string last_fault;
    std::map<CUdeviceptr, Allocation> allocations;  // by user address; freed ones stay (quarantine)
    std::vector<std::unique_ptr<Stream>> streams;
    std::vector<std::unique_ptr<Module>> modules;
    unsigned long long captures = 0;  // captures begun so far (ids from 1)
};

State& state() {
    static State s;
    return s;
}

// ---- the call trace (HNCA_FAKE_CUDA_TRACE) ----

// Never destroyed: the trace is written by an exit handler, after static destructors may run.
std::mutex& trace_lock() {
    static auto* m = new std::mutex;
    return *m;
}
std::map<std::string, unsigned long long>& trace_counts() {
    static auto* m = new std::map<std::string, unsigned long long>;
    return *m;
}
void count_call(const char* name) {
    std::lock_guard<std::mutex> g(trace_lock());
    trace_counts()[name] += 1;
}
void write_trace() {
    const char* path = std::getenv("HNCA_FAKE_CUDA_TRACE");
    if (!path || !*path) return;
    std::lock_guard<std::mutex> g(trace_lock());
    std::string json = "{";
    bool first = true;
    for (auto& [name, n] : trace_counts()) {
        json += (first ? "\"" : ", \"") + name + "\": " + std::to_string(n);
        first = false;
    }
    json += "}\n";
    if (FILE* f = std::fopen(path, "w")) {
        std::fputs(json.c_str(), f);
        std::fclose(f);
    }
}
__attribute__((constructor)) void register_trace() { std::atexit(write_trace); }

// The stream being captured, if any (this driver captures one stream at a time).
Stream* capturing_stream(State& s) {
    for (auto& st : s.streams)
        if (st->alive && st->capturing) return st.get();
    return nullptr;
}

// What a driver answers a call it does not allow while a capture is under way (global capture
// mode): the capture is invalidated and the call refused.
CUresult refuse_in_capture(State& s, Stream* st, const std::string& what) {
    st->invalidated = true;
    s.last_fault = what + " while a stream is being captured";
    std::fprintf(stderr, "emulated libcuda: %s\n", s.last_fault.c_str());
    return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
}

int primary_context_token;
thread_local CUcontext current_context = nullptr;

int device_count() {
    const char* v = std::getenv("HNCA_FAKE_CUDA_DEVICES");
    return v ? std::atoi(v) : 1;
}

CUresult fault(State& s, CUresult code, const std::string& what) {
    s.last_fault = what;
    std::fprintf(stderr, "emulated libcuda: %s\n", what.c_str());
    if (code == CUDA_ERROR_ILLEGAL_ADDRESS) s.sticky = code;
    return code;
}

std::string hex(CUdeviceptr p) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "0x%llx", p);
    return buf;
}

// The allocation (live or freed) whose user range contains p, if any.
std::pair<const CUdeviceptr, Allocation>* find_allocation(State& s, CUdeviceptr p) {
    auto it = s.allocations.upper_bound(p);
    if (it == s.allocations.begin()) return nullptr;
    --it;
    if (p >= it->first && p < it->first + it->second.size) return &*it;
    return nullptr;
}

// Checks that [p, p + bytes) lies inside one live allocation; describes the problem otherwise.
bool check_range(State& s, CUdeviceptr p, size_t bytes, const char* what, std::string* problem) {
    auto* a = find_allocation(s, p);
    if (!a) {
        *problem = std::string(what) + " at " + hex(p) + ", which is not in any allocation";
        return false;
    }
    if (!a->second.alive) {
        *problem = std::string(what) + " at " + hex(p) + ", inside a " + std::to_string(a->second.size) + "-byte allocation that was freed";
        return false;
    }
    size_t offset = p - a->first;
    if (bytes > a->second.size - offset) {
        *problem = std::string(what) + " of " + std::to_string(bytes) + " bytes at offset " + std::to_string(offset) + " of a " +
                   std::to_string(a->second.size) + "-byte allocation";
        return false;
    }
    return true;
}

// Describes the first damaged guard region of a live allocation, or returns "".
std::string damaged_guard(CUdeviceptr user, const Allocation& a) {
#ifdef EMU_ASAN
    return "";  // poisoned: the sanitizer has already reported any access
#endif
    for (size_t i = 0; i < GUARD; ++i) {
        if (a.raw[i] != GUARD_BYTE)
            return "before the start of the " + std::to_string(a.size) + "-byte allocation at " + hex(user) + " (from byte -" + std::to_string(GUARD - i) + ")";
    }
    for (size_t i = GUARD; i-- > 0;) {
        if (a.raw[GUARD + a.size + i] != GUARD_BYTE)
            return "past the end of the " + std::to_string(a.size) + "-byte allocation at " + hex(user) + " (up to byte " + std::to_string(a.size + i) + ")";
    }
    return "";
}

// Restores an allocation's guard regions once their damage has been reported, so that later
// checks report only new damage.
void repair_guards(Allocation& a) {
    std::memset(a.raw, GUARD_BYTE, GUARD);
    std::memset(a.raw + GUARD + a.size, GUARD_BYTE, GUARD);
}

bool stream_ok(State& s, CUstream stream) {
    if (stream == nullptr) return true;  // the legacy default stream
    for (auto& st : s.streams)
        if (st.get() == stream) return st->alive;
    return false;
}

// Parses the `.entry NAME( .param ... )` blocks of a PTX module: name -> (offsets, sizes).
bool parse_ptx(const std::string& ptx, std::vector<std::pair<std::string, std::vector<std::pair<size_t, size_t>>>>* entries, std::string* err) {
    size_t pos = 0;
    while ((pos = ptx.find(".entry ", pos)) != std::string::npos) {
        size_t name_start = pos + 7, paren = ptx.find('(', name_start);
        size_t close = ptx.find(')', paren);
        if (paren == std::string::npos || close == std::string::npos) {
            *err = "malformed .entry";
            return false;
        }
        std::string name = ptx.substr(name_start, paren - name_start);
        while (!name.empty() && (name.back() == ' ' || name.back() == '\n' || name.back() == '\t')) name.pop_back();
        std::vector<std::pair<size_t, size_t>> params;
        size_t offset = 0, p = paren;
        while ((p = ptx.find(".param", p)) != std::string::npos && p < close) {
            size_t end = ptx.find_first_of(",)", p);
            std::string decl = ptx.substr(p, end - p);
            size_t align = 0, size = 0;
            if (auto a = decl.find(".align "); a != std::string::npos) align = std::strtoul(decl.c_str() + a + 7, nullptr, 10);
            if (auto b = decl.find('['); b != std::string::npos) {
                size = std::strtoul(decl.c_str() + b + 1, nullptr, 10);
            } else if (decl.find("64") != std::string::npos) {
                size = 8;
            } else if (decl.find("32") != std::string::npos) {
                size = 4;
            } else {
                *err = "unsupported parameter declaration '" + decl + "' of " + name;
                return false;
            }
            if (align == 0) align = size;
            offset = (offset + align - 1) / align * align;
            params.push_back({offset, size});
            offset += size;
            p = end;
        }
        entries->push_back({name, params});
        pos = close;
    }
    return true;
}

}  // namespace

API const char* hnca_fake_cuda_last_fault() {
    return state().last_fault.c_str();
}

// For tests that provoke faults one after another: forget the last fault and un-poison the
// context (a real GPU needs a new process for that).
API void hnca_fake_cuda_reset() {
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    s.sticky = CUDA_SUCCESS;
    s.last_fault.clear();
}

API CUresult cuInit(unsigned) {
    count_call("cuInit");
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    s.initialized = true;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetCount(int* count) {
    count_call("cuDeviceGetCount");
    if (!state().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    *count = device_count();
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGet(CUdevice* device, int ordinal) {
    count_call("cuDeviceGet");
    if (!state().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (ordinal < 0 || ordinal >= device_count()) return device_count() == 0 ? CUDA_ERROR_NO_DEVICE : CUDA_ERROR_INVALID_DEVICE;
    *device = ordinal;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetAttribute(int* value, int attribute, CUdevice) {
    count_call("cuDeviceGetAttribute");
    switch (attribute) {
        case 1: *value = 1024; break;                  // max threads per block
        case 2: case 3: *value = 1024; break;          // max block dims x, y
        case 4: *value = 64; break;                    // max block dim z
        case 5: *value = 2147483647; break;            // max grid dim x
        case 6: case 7: *value = 65535; break;         // max grid dims y, z
        case 8: *value = (int)MAX_STATIC_PLUS_DYNAMIC_SHARED; break;
        case 10: *value = 32; break;                   // warp size
        case 16: *value = 1; break;                    // multiprocessors
        case 41: *value = 1; break;                    // unified addressing
        case 75: *value = 9; break;                    // compute capability 9.0
        case 76: *value = 0; break;
        case 115: *value = 0; break;                   // no memory pools: synchronous allocation
        default: *value = 0;
    }
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetName(char* name, int len, CUdevice) {
    count_call("cuDeviceGetName");
    std::snprintf(name, (size_t)len, "hnca emulated GPU");
    return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxRetain(CUcontext* ctx, CUdevice) {
    count_call("cuDevicePrimaryCtxRetain");
    *ctx = &primary_context_token;
    return CUDA_SUCCESS;
}
API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) {
    count_call("cuDevicePrimaryCtxRelease_v2");
    return CUDA_SUCCESS;
}
API CUresult cuCtxGetCurrent(CUcontext* ctx) {
    count_call("cuCtxGetCurrent");
    *ctx = current_context;
    return CUDA_SUCCESS;
}
API CUresult cuCtxSetCurrent(CUcontext ctx) {
    count_call("cuCtxSetCurrent");
    if (ctx != nullptr && ctx != &primary_context_token) return CUDA_ERROR_INVALID_CONTEXT;
    current_context = ctx;
    return CUDA_SUCCESS;
}
API CUresult cuCtxSynchronize() {
    count_call("cuCtxSynchronize");
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    if (Stream* c = capturing_stream(s)) return refuse_in_capture(s, c, "synchronising the context");
    return s.sticky;
}

API CUresult cuStreamCreate(CUstream* stream, unsigned) {
    count_call("cuStreamCreate");
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    s.streams.push_back(std::make_unique<Stream>());
    *stream = s.streams.back().get();
    return CUDA_SUCCESS;
}
API CUresult cuStreamDestroy_v2(CUstream stream) {
    count_call("cuStreamDestroy_v2");
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    for (auto& st : s.streams)
        if (st.get() == stream && st->alive) {
            st->alive = false;
            return CUDA_SUCCESS;
        }
    return fault(s, CUDA_ERROR_INVALID_HANDLE, "destroying a stream that does not exist or was already destroyed");
}
API CUresult cuStreamSynchronize(CUstream stream) {
    count_call("cuStreamSynchronize");
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    if (!stream_ok(s, stream)) return fault(s, CUDA_ERROR_INVALID_HANDLE, "synchronising a destroyed stream");
    if (Stream* c = capturing_stream(s)) return refuse_in_capture(s, c, "synchronising a stream");
    return s.sticky;
}
API CUresult cuStreamWaitEvent(CUstream stream, CUevent event, unsigned) {
    count_call("cuStreamWaitEvent");
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    if (!stream_ok(s, stream)) return fault(s, CUDA_ERROR_INVALID_HANDLE, "waiting on a destroyed stream");
    auto* st = static_cast<Stream*>(stream);
    if (st && st->capturing && static_cast<Event*>(event)->capture_id != st->capture_id) {
        st->invalidated = true;
        s.last_fault = "a capturing stream waited on an event recorded outside its capture";
        std::fprintf(stderr, "emulated libcuda: %s\n", s.last_fault.c_str());
        return CUDA_ERROR_STREAM_CAPTURE_ISOLATION;
    }
    return CUDA_SUCCESS;
}

// Work completes when issued, so events carry nothing.
API CUresult cuEventCreate(CUevent* event, unsigned) {
    count_call("cuEventCreate");
    *event = new Event();
    return CUDA_SUCCESS;
}
API CUresult cuEventRecord(CUevent event, CUstream stream) {
    count_call("cuEventRecord");
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    if (!stream_ok(s, stream)) return fault(s, CUDA_ERROR_INVALID_HANDLE, "recording an event on a destroyed stream");
    auto* st = static_cast<Stream*>(stream);
    static_cast<Event*>(event)->capture_id = st && st->capturing ? st->capture_id : 0;
    return CUDA_SUCCESS;
}
API CUresult cuEventDestroy_v2(CUevent event) {
    count_call("cuEventDestroy_v2");
    delete static_cast<Event*>(event);
    return CUDA_SUCCESS;
}
API CUresult cuEventQuery(CUevent) {
    count_call("cuEventQuery");
    return CUDA_SUCCESS;
}
API CUresult cuEventSynchronize(CUevent) {
    count_call("cuEventSynchronize");
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    if (Stream* c = capturing_stream(s)) return refuse_in_capture(s, c, "synchronising an event");
    return s.sticky;
}

API CUresult cuMemAlloc_v2(CUdeviceptr* ptr, size_t bytes) {
    count_call("cuMemAlloc_v2");
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    if (Stream* c = capturing_stream(s)) return refuse_in_capture(s, c, "allocating memory");
    auto* raw = static_cast<unsigned char*>(std::malloc(bytes + 2 * GUARD));
    if (!raw) return CUDA_ERROR_OUT_OF_MEMORY;
    std::memset(raw, GUARD_BYTE, GUARD);
    std::memset(raw + GUARD, 0xCD, bytes);  // uninitialised device memory is not zero
    std::memset(raw + GUARD + bytes, GUARD_BYTE, GUARD);
    EMU_POISON(raw, GUARD);
    EMU_POISON(raw + GUARD + bytes, GUARD);
    CUdeviceptr user = (CUdeviceptr)(raw + GUARD);
    s.allocations[user] = Allocation{raw, bytes, true};
    *ptr = user;
    return CUDA_SUCCESS;
}

API CUresult cuMemFree_v2(CUdeviceptr ptr) {
    count_call("cuMemFree_v2");
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    if (Stream* c = capturing_stream(s)) return refuse_in_capture(s, c, "freeing memory");
    auto it = s.allocations.find(ptr);
    if (it == s.allocations.end()) return fault(s, CUDA_ERROR_INVALID_VALUE, "freeing " + hex(ptr) + ", which was never allocated");
    if (!it->second.alive) return fault(s, CUDA_ERROR_INVALID_VALUE, "freeing the " + std::to_string(it->second.size) + "-byte allocation at " + hex(ptr) + " twice");
    std::string damage = damaged_guard(ptr, it->second);
    it->second.alive = false;  // quarantined: never reused, so later uses are recognisable
    EMU_POISON((void*)ptr, it->second.size);
    if (!damage.empty()) return fault(s, CUDA_ERROR_ILLEGAL_ADDRESS, "memory was written " + damage + " (found when it was freed)");
    return CUDA_SUCCESS;
}

API CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t n, CUstream stream) {
    count_call("cuMemsetD8Async");
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    std::string problem;
    if (!stream_ok(s, stream)) return fault(s, CUDA_ERROR_INVALID_HANDLE, "memset on a destroyed stream");
    if (Stream* c = capturing_stream(s)) return refuse_in_capture(s, c, "a memset");
    if (!check_range(s, dst, n, "memset", &problem)) return fault(s, CUDA_ERROR_INVALID_VALUE, problem);
    std::memset((void*)dst, value, n);
    return CUDA_SUCCESS;
}

API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t bytes, CUstream stream) {
    count_call("cuMemcpyHtoDAsync_v2");
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    std::string problem;
    if (!stream_ok(s, stream)) return fault(s, CUDA_ERROR_INVALID_HANDLE, "copy to the device on a destroyed stream");
    if (Stream* c = capturing_stream(s)) return refuse_in_capture(s, c, "a copy from pageable host memory");
    if (!check_range(s, dst, bytes, "copy to the device", &problem)) return fault(s, CUDA_ERROR_INVALID_VALUE, problem);
    std::memcpy((void*)dst, src, bytes);
    return CUDA_SUCCESS;
}

API CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t bytes, CUstream stream) {
    count_call("cuMemcpyDtoHAsync_v2");
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    std::string problem;
    if (!stream_ok(s, stream)) return fault(s, CUDA_ERROR_INVALID_HANDLE, "copy to the host on a destroyed stream");
    if (Stream* c = capturing_stream(s)) return refuse_in_capture(s, c, "a copy to pageable host memory");
    if (!check_range(s, src, bytes, "copy to the host", &problem)) return fault(s, CUDA_ERROR_INVALID_VALUE, problem);
    std::memcpy(dst, (const void*)src, bytes);
    return CUDA_SUCCESS;
}

API CUresult cuModuleLoadData(CUmodule* module, const void* image) {
    count_call("cuModuleLoadData");
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    std::string ptx(static_cast<const char*>(image));
    if (ptx.find(".version") == std::string::npos || ptx.find(".target") == std::string::npos)
        return fault(s, CUDA_ERROR_INVALID_IMAGE, "the module image is not PTX text");
    std::vector<std::pair<std::string, std::vector<std::pair<size_t, size_t>>>> entries;
    std::string err;
    if (!parse_ptx(ptx, &entries, &err)) return fault(s, CUDA_ERROR_INVALID_PTX, err);
    auto m = std::make_unique<Module>();
    for (auto& [name, params] : entries) {
        const EmuKernel* k = emu_find(name.c_str());
        if (!k) return fault(s, CUDA_ERROR_INVALID_IMAGE, "the PTX defines kernel " + name + ", which has no CPU twin in kernels/emu/table.h");
        if (params.size() != 1 || params[0].second != k->param_size)
            return fault(s, CUDA_ERROR_INVALID_PTX, "kernel " + name + ": the PTX declares " + std::to_string(params.size()) +
                                                        " parameter(s) but its CPU twin takes one " + std::to_string(k->param_size) + "-byte struct");
        auto f = std::make_unique<Function>();
        f->name = name;
        f->kernel = k;
        for (auto& [off, size] : params) {
            f->param_offsets.push_back(off);
            f->param_sizes.push_back(size);
        }
        m->functions.push_back(std::move(f));
    }
    *module = m.get();
    s.modules.push_back(std::move(m));
    return CUDA_SUCCESS;
}

API CUresult cuModuleUnload(CUmodule) {
    count_call("cuModuleUnload");
    return CUDA_SUCCESS;
}

API CUresult cuModuleGetFunction(CUfunction* function, CUmodule module, const char* name) {
    count_call("cuModuleGetFunction");
    for (auto& f : static_cast<Module*>(module)->functions)
        if (f->name == name) {
            *function = f.get();
            return CUDA_SUCCESS;
        }
    return CUDA_ERROR_NOT_FOUND;
}

API CUresult cuFuncGetParamInfo(CUfunction function, size_t index, size_t* offset, size_t* size) {
    count_call("cuFuncGetParamInfo");
    auto* f = static_cast<Function*>(function);
    if (index >= f->param_sizes.size()) return CUDA_ERROR_INVALID_VALUE;
    if (offset) *offset = f->param_offsets[index];
    if (size) *size = f->param_sizes[index];
    return CUDA_SUCCESS;
}

namespace {
// Runs one launch and checks every live allocation's guard regions afterwards.
CUresult run_launch(State& s, Function* f, dim3 grid, dim3 block, const void* params) {
    if (!f->kernel->run(grid, block, params)) return fault(s, CUDA_ERROR_LAUNCH_FAILED, "kernel " + f->name + ": " + emu_error);
    for (auto& [user, a] : s.allocations) {
        if (!a.alive) continue;
        std::string damage = damaged_guard(user, a);
        if (!damage.empty()) {
            repair_guards(a);
            return fault(s, CUDA_ERROR_ILLEGAL_ADDRESS, "kernel " + f->name + " wrote " + damage);
        }
    }
    return CUDA_SUCCESS;
}

// Use after free: every aligned 8-byte word of a launch's argument that points into freed memory.
CUresult scan_words_for_freed(State& s, const std::string& kernel, const unsigned char* arg, size_t bytes, const std::string& what) {
    for (size_t off = 0; off + 8 <= bytes; off += 8) {
        CUdeviceptr word;
        std::memcpy(&word, arg + off, 8);
        auto* a = word ? find_allocation(s, word) : nullptr;
        if (a && !a->second.alive)
            return fault(s, CUDA_ERROR_ILLEGAL_ADDRESS, "kernel " + kernel + " was given " + hex(word) + " (" + what + " bytes " + std::to_string(off) +
                                                            "..), inside a " + std::to_string(a->second.size) + "-byte allocation that was freed");
    }
    return CUDA_SUCCESS;
}

// The argument of a launch over `runs` runs (grid z); a batched twin's (name_runs, KERNEL in
// common.cuh) is the address of its runs' parameter structs, which are scanned too.
CUresult scan_for_freed(State& s, Function* f, const unsigned char* arg, unsigned runs) {
    if (CUresult r = scan_words_for_freed(s, f->name, arg, f->kernel->param_size, "argument"); r != CUDA_SUCCESS) return r;
    const std::string suffix = "_runs";
    if (f->name.size() <= suffix.size() || f->name.compare(f->name.size() - suffix.size(), suffix.size(), suffix) != 0) return CUDA_SUCCESS;
    const EmuKernel* base = emu_find(f->name.substr(0, f->name.size() - suffix.size()).c_str());
    if (!base) return CUDA_SUCCESS;
    CUdeviceptr table;
    std::memcpy(&table, arg, 8);
    std::string problem;
    const std::string what = "the runs' parameters of " + f->name;
    if (!check_range(s, table, (size_t)runs * base->param_size, what.c_str(), &problem))
        return fault(s, CUDA_ERROR_ILLEGAL_ADDRESS, problem);
    for (unsigned r = 0; r < runs; ++r) {
        const unsigned char* run = reinterpret_cast<const unsigned char*>(table) + (size_t)r * base->param_size;
        if (CUresult res = scan_words_for_freed(s, f->name, run, base->param_size, "run " + std::to_string(r) + "'s parameter"); res != CUDA_SUCCESS)
            return res;
    }
    return CUDA_SUCCESS;
}
}  // namespace

API CUresult cuLaunchKernel(CUfunction function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shared,
                            CUstream stream, void** params, void** extra) {
    count_call("cuLaunchKernel");
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    auto* f = static_cast<Function*>(function);
    if (s.sticky != CUDA_SUCCESS) return s.sticky;
    if (!stream_ok(s, stream)) return fault(s, CUDA_ERROR_INVALID_HANDLE, "launch of " + f->name + " on a destroyed stream");
    unsigned long long threads = (unsigned long long)bx * by * bz;
    if (bx == 0 || by == 0 || bz == 0 || gx == 0 || gy == 0 || gz == 0 || threads > 1024 || bx > 1024 || by > 1024 || bz > 64 || gx > 2147483647u ||
        gy > 65535 || gz > 65535)
        return fault(s, CUDA_ERROR_INVALID_VALUE, "launch of " + f->name + " with grid (" + std::to_string(gx) + ", " + std::to_string(gy) + ", " +
                                                      std::to_string(gz) + ") and block (" + std::to_string(bx) + ", " + std::to_string(by) + ", " +
                                                      std::to_string(bz) + "), which a GPU refuses");
    if (shared > MAX_STATIC_PLUS_DYNAMIC_SHARED)
        return fault(s, CUDA_ERROR_INVALID_VALUE, "launch of " + f->name + " asking for " + std::to_string(shared) + " bytes of dynamic shared memory");
    if (extra != nullptr || params == nullptr || params[0] == nullptr)
        return fault(s, CUDA_ERROR_INVALID_VALUE, "launch of " + f->name + " without its parameter (only kernelParams is supported)");
    if (CUresult r = scan_for_freed(s, f, static_cast<const unsigned char*>(params[0]), gz); r != CUDA_SUCCESS) return r;
    auto* st = static_cast<Stream*>(stream);
    if (st && st->capturing) {
        // Recorded, not run: everything the kernel receives by value is frozen now.
        const unsigned char* bytes = static_cast<const unsigned char*>(params[0]);
        st->recorded.push_back(Launch{f, {gx, gy, gz}, {bx, by, bz}, std::vector<unsigned char>(bytes, bytes + f->kernel->param_size)});
        return CUDA_SUCCESS;
    }
    return run_launch(s, f, dim3{gx, gy, gz}, dim3{bx, by, bz}, params[0]);
}

// ---- stream capture and graphs ----

API CUresult cuStreamBeginCapture_v2(CUstream stream, int) {
    count_call("cuStreamBeginCapture_v2");
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    if (stream == nullptr) return fault(s, CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "a capture on the legacy NULL stream");
    if (!stream_ok(s, stream)) return fault(s, CUDA_ERROR_INVALID_HANDLE, "capturing a destroyed stream");
    if (capturing_stream(s)) return fault(s, CUDA_ERROR_ILLEGAL_STATE, "beginning a capture while another is under way");
    auto* st = static_cast<Stream*>(stream);
    st->capturing = true;
    st->invalidated = false;
    st->capture_id = ++s.captures;
    st->recorded.clear();
    return CUDA_SUCCESS;
}

API CUresult cuStreamIsCapturing(CUstream stream, int* status) {
    count_call("cuStreamIsCapturing");
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    auto* st = static_cast<Stream*>(stream);
    *status = st && st->capturing ? (st->invalidated ? 2 : 1) : 0;
    return CUDA_SUCCESS;
}

API CUresult cuStreamEndCapture(CUstream stream, CUgraph* graph) {
    count_call("cuStreamEndCapture");
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    auto* st = static_cast<Stream*>(stream);
    if (!st || !stream_ok(s, stream) || !st->capturing) return fault(s, CUDA_ERROR_ILLEGAL_STATE, "ending a capture that was not begun");
    st->capturing = false;
    *graph = nullptr;
    if (st->invalidated) return fault(s, CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, "the capture was invalidated by a call it does not allow");
    *graph = new Graph{std::move(st->recorded)};
    st->recorded.clear();
    return CUDA_SUCCESS;
}

API CUresult cuGraphInstantiateWithFlags(CUgraphExec* exec, CUgraph graph, unsigned long long) {
    count_call("cuGraphInstantiateWithFlags");
    if (!graph) return CUDA_ERROR_INVALID_VALUE;
    *exec = new Graph(*static_cast<Graph*>(graph));
    return CUDA_SUCCESS;
}

API CUresult cuGraphUpload(CUgraphExec exec, CUstream) {
    count_call("cuGraphUpload");
    return exec ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

// Replays the recorded launches in order, with the checks of a direct launch.
API CUresult cuGraphLaunch(CUgraphExec exec, CUstream stream) {
    count_call("cuGraphLaunch");
    State& s = state();
    std::lock_guard<std::mutex> g(s.lock);
    if (!exec) return CUDA_ERROR_INVALID_VALUE;
    if (s.sticky != CUDA_SUCCESS) return s.sticky;
    if (!stream_ok(s, stream)) return fault(s, CUDA_ERROR_INVALID_HANDLE, "launching a graph on a destroyed stream");
    if (Stream* c = capturing_stream(s)) return refuse_in_capture(s, c, "launching a graph");
    for (Launch& l : static_cast<Graph*>(exec)->launches) {
        // Not a driver function: the kernels graph launches run, for the per-step contract.
        count_call("graph kernel node");
        if (CUresult r = scan_for_freed(s, l.function, l.params.data(), l.grid[2]); r != CUDA_SUCCESS) return r;
        if (CUresult r = run_launch(s, l.function, dim3{l.grid[0], l.grid[1], l.grid[2]}, dim3{l.block[0], l.block[1], l.block[2]}, l.params.data());
            r != CUDA_SUCCESS)
            return r;
    }
    return CUDA_SUCCESS;
}

API CUresult cuGraphExecDestroy(CUgraphExec exec) {
    count_call("cuGraphExecDestroy");
    delete static_cast<Graph*>(exec);
    return CUDA_SUCCESS;
}

API CUresult cuGraphDestroy(CUgraph graph) {
    count_call("cuGraphDestroy");
    delete static_cast<Graph*>(graph);
    return CUDA_SUCCESS;
}

// The calls made so far of one driver function (for benchmarks reading their own counts).
API unsigned long long hnca_fake_cuda_calls(const char* name) {
    std::lock_guard<std::mutex> g(trace_lock());
    auto it = trace_counts().find(name);
    return it == trace_counts().end() ? 0 : it->second;
}

namespace {
struct ErrorName {
    int code;
    const char* name;
    const char* text;
};
const ErrorName error_names[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {CUDA_ERROR_INVALID_PTX, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {CUDA_ERROR_ILLEGAL_STATE, "CUDA_ERROR_ILLEGAL_STATE", "the operation cannot be performed in the present state"},
    {CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", "operation not permitted when stream is capturing"},
    {CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED", "operation failed due to a previous error during capture"},
    {CUDA_ERROR_STREAM_CAPTURE_ISOLATION, "CUDA_ERROR_STREAM_CAPTURE_ISOLATION", "operation would make the legacy stream depend on a capturing blocking stream"},
};
}  // namespace

API CUresult cuGetErrorName(CUresult code, const char** name) {
    count_call("cuGetErrorName");
    for (auto& e : error_names)
        if (e.code == code) {
            *name = e.name;
            return CUDA_SUCCESS;
        }
    return CUDA_ERROR_INVALID_VALUE;
}

API CUresult cuGetErrorString(CUresult code, const char** text) {
    count_call("cuGetErrorString");
    for (auto& e : error_names)
        if (e.code == code) {
            *text = e.text;
            return CUDA_SUCCESS;
        }
    return CUDA_ERROR_INVALID_VALUE;
}

// The sanitizer build's proof (tests/emulation.rs): a kernel that reads one float past the end
// of a 4-float device allocation, which guard regions alone cannot see (they catch writes).
// Returns 0 when the launch finished (the plain build), never under AddressSanitizer, which
// reports the read and ends the process.
namespace read_past_end {
struct Params {
    float* out;
    const float* in;
    int n;
};
void kernel(const Params p) {
    if (threadIdx.x == 0) p.out[0] = p.in[p.n];
}
}  // namespace read_past_end

API int hnca_fake_cuda_read_past_end() {
    CUdeviceptr in = 0, out = 0;
    if (cuMemAlloc_v2(&in, 4 * sizeof(float)) != CUDA_SUCCESS || cuMemAlloc_v2(&out, sizeof(float)) != CUDA_SUCCESS) return 1;
    read_past_end::Params p{reinterpret_cast<float*>(out), reinterpret_cast<const float*>(in), 4};
    return emu_run<read_past_end::Params>(read_past_end::kernel, dim3{1, 1, 1}, dim3{32, 1, 1}, p) ? 0 : 2;
}
