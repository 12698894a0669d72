/*
 * adamlab's step bridge: the per-step checks and gathering of a cached fused plan, in C++.
 *
 * A fused step (adam_kernels.c) needs, every step, the address of each parameter's gradient, and the
 * assurance that nothing the plan cached has changed: the parameters are the same objects, own the same
 * memory (``p.data = …`` changes it), have the same size and dtype; every state tensor is the same object;
 * every gradient is a dense contiguous CPU tensor of the parameter's dtype. Done in Python that costs about
 * 1.5 µs a tensor (a few hundred µs a step for a transformer's ~200 tensors, several % of a memory-bound
 * step); here it is a few ns a tensor. See docs/performance.md.
 *
 * Built by build.py against torch's own headers and libraries (the ABI of the running torch); when it
 * cannot be built the plan does the same checks in Python (fused.py), with the same outcome.
 */
#include <Python.h>

#include <ATen/core/Tensor.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cstdint>
#include <vector>

namespace {

/* A writable buffer of `count` 8-byte items, or an error. */
struct Buffer {
    Py_buffer view{};
    bool held = false;
    ~Buffer() {
        if (held) PyBuffer_Release(&view);
    }
    bool get(PyObject *obj, Py_ssize_t count, bool writable, const char *name) {
        if (PyObject_GetBuffer(obj, &view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) != 0) return false;
        held = true;
        if (view.len != count * 8) {
            PyErr_Format(PyExc_ValueError, "%s: expected %zd 8-byte items, got %zd bytes", name, count, view.len);
            return false;
        }
        return true;
    }
};

/* The plain tensor the kernel may take: dense, contiguous, on the CPU, of dtype `dtype`. */
bool usable(const c10::TensorImpl *t, caffe2::TypeMeta dtype) {
    return t->layout() == c10::kStrided && t->is_cpu() && t->dtype() == dtype && t->is_contiguous();
}

/* Fetch the first `lines` cache lines of an object ahead of use. */
inline void prefetch(const void *object, int lines) {
    for (int j = 0; j < lines; ++j) __builtin_prefetch(static_cast<const char *>(object) + 64 * j, 0, 3);
}

/* One pass per level of indirection, each over all tensors: right after the step has streamed the whole
 * model through the caches, every object here (Python object, TensorImpl, storage, autograd meta, gradient)
 * is a cache miss, and a pass whose iterations are independent keeps many of them in flight, where a loop
 * that walked each tensor's chain of pointers in turn would wait for every miss. */
constexpr int TENSOR_IMPL_LINES = 4;

/* The arguments of a plan's checks (see gather). */
struct Plan {
    PyObject *params, *plan_params, *param_ptrs_obj, *numel_obj, *states, *keys, *state_objects, *grad_ptrs_obj;
    int is_double;
};

constexpr const char *PLAN_FORMAT = "O!O!OOiO!O!O!O";
#define PLAN_ARGS(pl)                                                                                       \
    &PyList_Type, &(pl).params, &PyTuple_Type, &(pl).plan_params, &(pl).param_ptrs_obj, &(pl).numel_obj,  \
        &(pl).is_double, &PyTuple_Type, &(pl).states, &PyTuple_Type, &(pl).keys, &PyTuple_Type,            \
        &(pl).state_objects, &(pl).grad_ptrs_obj

/* The plan's three buffers, held while they are used. */
struct PlanBuffers {
    Buffer param_ptrs, numel, grad_ptrs;
};

/* The checks and the gathering: 0, 1 or 2 as gather returns them; -1 with a Python error set. Leaves the
 * plan's buffers held in `buffers` (for step's kernel call). */
int check_and_gather(const Plan &pl, PlanBuffers &buffers) {
    PyObject *params = pl.params, *plan_params = pl.plan_params, *states = pl.states, *keys = pl.keys;
    PyObject *state_objects = pl.state_objects;
    const Py_ssize_t n = PyTuple_GET_SIZE(plan_params);
    const Py_ssize_t n_keys = PyTuple_GET_SIZE(keys);
    if (PyTuple_GET_SIZE(states) != n || PyTuple_GET_SIZE(state_objects) != n * n_keys) {
        PyErr_SetString(PyExc_ValueError, "gather: states and state_objects do not match plan_params");
        return -1;
    }
    Buffer &param_ptrs = buffers.param_ptrs, &numel = buffers.numel, &grad_ptrs = buffers.grad_ptrs;
    if (!param_ptrs.get(pl.param_ptrs_obj, n, false, "param_ptrs") || !numel.get(pl.numel_obj, n, false, "numel") ||
        !grad_ptrs.get(pl.grad_ptrs_obj, n, true, "grad_ptrs"))
        return -1;
    const auto *expected_ptr = static_cast<const uint64_t *>(param_ptrs.view.buf);
    const auto *expected_numel = static_cast<const int64_t *>(numel.view.buf);
    auto *out = static_cast<uint64_t *>(grad_ptrs.view.buf);
    const caffe2::TypeMeta dtype =
        pl.is_double ? caffe2::TypeMeta::Make<double>() : caffe2::TypeMeta::Make<float>();

    // The parameters: the same objects (only their addresses are compared: no object is touched yet).
    if (PyList_GET_SIZE(params) != n) return 1;
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject *obj = PyList_GET_ITEM(params, i);
        if (obj != PyTuple_GET_ITEM(plan_params, i)) return 1;
        prefetch(obj, 1);
        PyObject *state = PyTuple_GET_ITEM(states, i);
        if (!PyDict_Check(state)) return 1;  // (reads the type: fetches the dict too)
    }
    std::vector<c10::TensorImpl *> impl(n), grad(n, nullptr);
    for (Py_ssize_t i = 0; i < n; ++i) {
        impl[i] = THPVariable_Unpack(PyList_GET_ITEM(params, i)).unsafeGetTensorImpl();
        prefetch(impl[i], TENSOR_IMPL_LINES);
        prefetch(reinterpret_cast<PyDictObject *>(PyTuple_GET_ITEM(states, i))->ma_keys, 2);
    }
    // The state tensors: the same objects (a dict lookup per key, interleaved over the tensors).
    for (Py_ssize_t k = 0; k < n_keys; ++k) {
        PyObject *key = PyTuple_GET_ITEM(keys, k);
        for (Py_ssize_t i = 0; i < n; ++i) {
            PyObject *value = PyDict_GetItemWithError(PyTuple_GET_ITEM(states, i), key);  // borrowed
            if (value == nullptr && PyErr_Occurred()) return -1;
            if (value != PyTuple_GET_ITEM(state_objects, k * n + i)) return 1;
        }
    }
    // The parameters again: dtype, layout, size, and the memory they own (``p.data = …`` changes it).
    for (Py_ssize_t i = 0; i < n; ++i) {
        const c10::TensorImpl *t = impl[i];
        if (!usable(t, dtype) || t->numel() != expected_numel[i] || !t->has_storage()) return 1;
        prefetch(t->storage().unsafeGetStorageImpl(), 2);
        if (t->autograd_meta() != nullptr) prefetch(t->autograd_meta(), 2);
    }
    // The gradients: one each, dense, contiguous, of the parameter's dtype and size.
    for (Py_ssize_t i = 0; i < n; ++i) {
        if (reinterpret_cast<uint64_t>(impl[i]->mutable_data()) != expected_ptr[i]) return 1;
        const at::Tensor &g = impl[i]->grad();
        if (!g.defined()) return 2;
        grad[i] = g.unsafeGetTensorImpl();
        prefetch(grad[i], TENSOR_IMPL_LINES);
    }
    for (Py_ssize_t i = 0; i < n; ++i) {
        const c10::TensorImpl *g = grad[i];
        if (!usable(g, dtype) || g->numel() != expected_numel[i] || !g->has_storage()) return 2;
        prefetch(g->storage().unsafeGetStorageImpl(), 2);
    }
    for (Py_ssize_t i = 0; i < n; ++i) out[i] = reinterpret_cast<uint64_t>(grad[i]->mutable_data());
    return 0;
}

/*
 * gather(params, plan_params, param_ptrs, numel, is_double, states, keys, state_objects, grad_ptrs) -> int
 *
 *   params         the group's parameter list, as it is now
 *   plan_params    the parameters the plan was built for (a tuple)
 *   param_ptrs     their data addresses then (uint64 buffer); numel: their sizes (int64 buffer)
 *   is_double      the plan's dtype: 1 float64, 0 float32
 *   states         their state dicts (a tuple); keys: the state keys checked (a tuple of str)
 *   state_objects  the tensors the plan holds, key-major: state_objects[k * n + i] is states[i][keys[k]]
 *   grad_ptrs      out: the gradients' data addresses (uint64 buffer)
 *
 * Returns 0 (grad_ptrs filled: the plan may step), 1 (the plan no longer describes the group: rebuild it)
 * or 2 (a parameter has no gradient, or one the kernel cannot take: the caller's general path decides).
 */
PyObject *gather(PyObject *, PyObject *args) {
    Plan pl;
    if (!PyArg_ParseTuple(args, PLAN_FORMAT, PLAN_ARGS(pl))) return nullptr;
    PlanBuffers buffers;
    const int code = check_and_gather(pl, buffers);
    return code < 0 ? nullptr : PyLong_FromLong(code);
}

/* The kernel's entry points (adam_kernels.c). */
using adam_step_t = int64_t (*)(int, int64_t, const int64_t *, void *const *, void *const *, void *const *,
                                void *const *, void *const *, void *const *, float *const *, const double *, int,
                                int, int64_t *);
using adamax_step_t = int64_t (*)(int, int64_t, const int64_t *, void *const *, void *const *, void *const *,
                                  void *const *, void *const *, float *const *, const double *, int, int, int64_t *);

/*
 * step(<gather's nine arguments>, kernel, is_adamax, arrays, hp, flags, nthreads) -> int
 *
 * gather, then, if it returned 0, one call of the kernel: ``kernel`` is the address of adamlab_adam_step (or,
 * with is_adamax, adamlab_adamax_step); ``arrays`` the addresses (ints, 0 for none) of the pointer arrays of
 * m, v (u), v_max and θ̄, of the step counters and of the per-tensor non-finite counts; ``hp`` the
 * hyper-parameters (float64 buffer: ``AdamHyperparameters.kernel_array()``), ``flags`` the option bits
 * (``.flags``); both are passed through to the kernel untouched. The kernel runs without the GIL.
 *
 * Returns −1 (the plan no longer describes the group), −2 (a gradient the kernel cannot take), or the
 * number of non-finite gradient entries of the step (≥ 0).
 */
PyObject *step(PyObject *, PyObject *args) {
    Plan pl;
    unsigned long long kernel;
    int is_adamax, flags, nthreads;
    unsigned long long m, v, vmax, avg, steps, nonfinite;
    Py_buffer hp;
    if (!PyArg_ParseTuple(args, "O!O!OOiO!O!O!OKi(KKKKKK)y*ii", PLAN_ARGS(pl), &kernel, &is_adamax, &m, &v, &vmax,
                          &avg, &steps, &nonfinite, &hp, &flags, &nthreads))
        return nullptr;
    // How many values the kernel reads (HP_COUNT) is the hyper-parameter type's business: its KERNEL_ARRAY is
    // checked against adam_kernels.c's HP_* enum before the first fused step (hyperparameters.py), so no count
    // is written here; the bridge only insists on a buffer of float64 values.
    if (hp.len == 0 || hp.len % 8 != 0) {
        PyBuffer_Release(&hp);
        PyErr_SetString(PyExc_ValueError, "step: hp must hold float64 values (adamlab.hyperparameters.KERNEL_ARRAY)");
        return nullptr;
    }
    PlanBuffers buffers;
    const int code = check_and_gather(pl, buffers);
    if (code != 0) {
        PyBuffer_Release(&hp);
        return code < 0 ? nullptr : PyLong_FromLong(-code);
    }
    const Py_ssize_t n = PyTuple_GET_SIZE(pl.plan_params);
    auto ptr = [](unsigned long long a) { return reinterpret_cast<void *const *>(static_cast<uintptr_t>(a)); };
    const auto *sizes = static_cast<const int64_t *>(buffers.numel.view.buf);
    void *const *param = static_cast<void *const *>(buffers.param_ptrs.view.buf);
    void *const *grad = static_cast<void *const *>(buffers.grad_ptrs.view.buf);
    auto *step_counters = reinterpret_cast<float *const *>(static_cast<uintptr_t>(steps));
    auto *counts = reinterpret_cast<int64_t *>(static_cast<uintptr_t>(nonfinite));
    const auto *hyper = static_cast<const double *>(hp.buf);
    int64_t bad;
    Py_BEGIN_ALLOW_THREADS;
    if (is_adamax)
        bad = reinterpret_cast<adamax_step_t>(static_cast<uintptr_t>(kernel))(
            pl.is_double, n, sizes, param, grad, ptr(m), ptr(v), ptr(avg), step_counters, hyper, flags, nthreads,
            counts);
    else
        bad = reinterpret_cast<adam_step_t>(static_cast<uintptr_t>(kernel))(
            pl.is_double, n, sizes, param, grad, ptr(m), ptr(v), ptr(vmax), ptr(avg), step_counters, hyper, flags,
            nthreads, counts);
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&hp);
    return PyLong_FromLongLong(bad);
}

PyMethodDef methods[] = {
    {"gather", gather, METH_VARARGS, "Check a fused plan against its group and gather the gradients' addresses."},
    {"step", step, METH_VARARGS, "gather, then the fused kernel's step: the whole per-step path of a plan."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "adamlab_bridge", "adamlab's step bridge (see bridge.cpp).", -1,
                      methods};

}  // namespace

PyMODINIT_FUNC PyInit_adamlab_bridge(void) { return PyModule_Create(&module); }
