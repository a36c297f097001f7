using System.Collections.Concurrent;

namespace Colo.Nbd.Tests.Support;

/// <summary>A memory device that records every call ("write 0 4096 fua", "flush", ...) and can hold reads at chosen
/// offsets until released, to force out-of-order completion.</summary>
internal sealed class RecordingDevice(long size, bool readOnly = false) : IBlockDevice
{
    private readonly MemoryBlockDevice _inner = new(size, readOnly);
    private readonly ConcurrentDictionary<long, TaskCompletionSource> _gates = new();

    public ConcurrentQueue<string> Calls { get; } = new();

    public MemoryBlockDevice Inner => _inner;

    public long Size => _inner.Size;

    public bool IsReadOnly => _inner.IsReadOnly;

    /// <summary>Exception thrown by the next call, if set.</summary>
    public Exception? FailNext { get; set; }

    /// <summary>Makes reads at <paramref name="offset"/> wait until <see cref="Release"/>.</summary>
    public void Hold(long offset) => _gates[offset] = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

    public void Release(long offset)
    {
        if (_gates.TryRemove(offset, out TaskCompletionSource? gate))
        {
            gate.SetResult();
        }
    }

    public async ValueTask ReadAsync(long offset, Memory<byte> buffer)
    {
        Record($"read {offset} {buffer.Length}");
        if (_gates.TryGetValue(offset, out TaskCompletionSource? gate))
        {
            await gate.Task;
        }

        await _inner.ReadAsync(offset, buffer);
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua)
    {
        Record($"write {offset} {data.Length}{(fua ? " fua" : "")}");
        return _inner.WriteAsync(offset, data, fua);
    }

    public ValueTask FlushAsync()
    {
        Record("flush");
        return default;
    }

    public ValueTask TrimAsync(long offset, long length)
    {
        Record($"trim {offset} {length}");
        return _inner.TrimAsync(offset, length);
    }

    public ValueTask WriteZeroesAsync(long offset, long length, bool noHole)
    {
        Record($"zero {offset} {length}{(noHole ? " nohole" : "")}");
        return _inner.WriteZeroesAsync(offset, length, noHole);
    }

    private void Record(string call)
    {
        Calls.Enqueue(call);
        if (FailNext is { } ex)
        {
            FailNext = null;
            throw ex;
        }
    }
}
