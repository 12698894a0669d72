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
    PyObject *params, *plan_params, *param_ptrs_obj, *numel_obj, *states, *keys, *state_objects, *grad_ptrs_obj;
    int is_double;
    if (!PyArg_ParseTuple(args, "O!O!OOiO!O!O!O", &PyList_Type, &params, &PyTuple_Type, &plan_params,
                          &param_ptrs_obj, &numel_obj, &is_double, &PyTuple_Type, &states, &PyTuple_Type, &keys,
                          &PyTuple_Type, &state_objects, &grad_ptrs_obj))
        return nullptr;
    const Py_ssize_t n = PyTuple_GET_SIZE(plan_params);
    const Py_ssize_t n_keys = PyTuple_GET_SIZE(keys);
    if (PyTuple_GET_SIZE(states) != n || PyTuple_GET_SIZE(state_objects) != n * n_keys) {
        PyErr_SetString(PyExc_ValueError, "gather: states and state_objects do not match plan_params");
        return nullptr;
    }
    Buffer param_ptrs, numel, grad_ptrs;
    if (!param_ptrs.get(param_ptrs_obj, n, false, "param_ptrs") || !numel.get(numel_obj, n, false, "numel") ||
        !grad_ptrs.get(grad_ptrs_obj, n, true, "grad_ptrs"))
        return nullptr;
    const auto *expected_ptr = static_cast<const uint64_t *>(param_ptrs.view.buf);
    const auto *expected_numel = static_cast<const int64_t *>(numel.view.buf);
    auto *out = static_cast<uint64_t *>(grad_ptrs.view.buf);
    const caffe2::TypeMeta dtype = is_double ? caffe2::TypeMeta::Make<double>() : caffe2::TypeMeta::Make<float>();

    // The parameters: the same objects (only their addresses are compared: no object is touched yet).
    if (PyList_GET_SIZE(params) != n) return PyLong_FromLong(1);
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject *obj = PyList_GET_ITEM(params, i);
        if (obj != PyTuple_GET_ITEM(plan_params, i)) return PyLong_FromLong(1);
        prefetch(obj, 1);
        PyObject *state = PyTuple_GET_ITEM(states, i);
        if (!PyDict_Check(state)) return PyLong_FromLong(1);  // (reads the type: fetches the dict too)
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
            if (value == nullptr && PyErr_Occurred()) return nullptr;
            if (value != PyTuple_GET_ITEM(state_objects, k * n + i)) return PyLong_FromLong(1);
        }
    }
    // The parameters again: dtype, layout, size, and the memory they own (``p.data = …`` changes it).
    for (Py_ssize_t i = 0; i < n; ++i) {
        const c10::TensorImpl *t = impl[i];
        if (!usable(t, dtype) || t->numel() != expected_numel[i] || !t->has_storage()) return PyLong_FromLong(1);
        prefetch(t->storage().unsafeGetStorageImpl(), 2);
        if (t->autograd_meta() != nullptr) prefetch(t->autograd_meta(), 2);
    }
    // The gradients: one each, dense, contiguous, of the parameter's dtype and size.
    for (Py_ssize_t i = 0; i < n; ++i) {
        if (reinterpret_cast<uint64_t>(impl[i]->mutable_data()) != expected_ptr[i]) return PyLong_FromLong(1);
        const at::Tensor &g = impl[i]->grad();
        if (!g.defined()) return PyLong_FromLong(2);
        grad[i] = g.unsafeGetTensorImpl();
        prefetch(grad[i], TENSOR_IMPL_LINES);
    }
    for (Py_ssize_t i = 0; i < n; ++i) {
        const c10::TensorImpl *g = grad[i];
        if (!usable(g, dtype) || g->numel() != expected_numel[i] || !g->has_storage()) return PyLong_FromLong(2);
        prefetch(g->storage().unsafeGetStorageImpl(), 2);
    }
    for (Py_ssize_t i = 0; i < n; ++i) out[i] = reinterpret_cast<uint64_t>(grad[i]->mutable_data());
    return PyLong_FromLong(0);
}

PyMethodDef methods[] = {
    {"gather", gather, METH_VARARGS, "Check a fused plan against its group and gather the gradients' addresses."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "adamlab_bridge", "adamlab's step bridge (see bridge.cpp).", -1,
                      methods};

}  // namespace

PyMODINIT_FUNC PyInit_adamlab_bridge(void) { return PyModule_Create(&module); }
