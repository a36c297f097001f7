using System.IO.Hashing;

namespace Colo.Checkpoint;

/// <summary>
/// Finds the guest pages that changed since the previous scan by hashing every 4 KiB page with
/// XxHash128 and comparing with the hash kept from the previous epoch (DESIGN.md: these kernels
/// lack soft-dirty tracking). Run it only while the VM is stopped. Not thread-safe.
/// </summary>
public sealed class PageTracker
{
    private readonly UInt128[] _hashes;
    private readonly bool[] _changed;
    private readonly bool[] _forced;

    /// <summary>Creates a tracker for <paramref name="pageCount"/> pages; every page counts as changed until the first scan.</summary>
    public PageTracker(int pageCount)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(pageCount);
        _hashes = new UInt128[pageCount];
        _changed = new bool[pageCount];
        _forced = new bool[pageCount];
    }

    /// <summary>Number of pages tracked.</summary>
    public int PageCount => _hashes.Length;

    /// <summary>
    /// Hashes every page of <paramref name="ram"/>, records the new hashes and writes the indexes
    /// of pages whose hash differs from the previous scan into <paramref name="changed"/>, in
    /// ascending order. With <paramref name="all"/> every page is reported (initial sync).
    /// Uses both host cores.
    /// </summary>
    /// <returns>The number of changed page indexes written.</returns>
    /// <exception cref="ArgumentException">The RAM or the output buffer does not match the tracker's page count.</exception>
    public int Scan(GuestRam ram, Span<int> changed, bool all = false)
    {
        if (ram.PageCount != _hashes.Length)
            throw new ArgumentException("guest RAM size differs from the tracker's", nameof(ram));
        if (changed.Length < _hashes.Length)
            throw new ArgumentException("output buffer must hold one index per page", nameof(changed));
        int pages = _hashes.Length;
        int workers = Math.Max(1, Math.Min(Environment.ProcessorCount, 4));
        int chunk = (pages + workers - 1) / workers;
        Parallel.For(0, workers, w =>
        {
            int start = w * chunk;
            int end = Math.Min(pages, start + chunk);
            for (int i = start; i < end; i++)
            {
                UInt128 h = XxHash128.HashToUInt128(ram.Page(i));
                _changed[i] = all || _forced[i] || h != _hashes[i];
                _forced[i] = false;
                _hashes[i] = h;
            }
        });
        int n = 0;
        for (int i = 0; i < pages; i++)
        {
            if (_changed[i])
                changed[n++] = i;
        }
        return n;
    }

    /// <summary>
    /// Forgets the recorded hashes of the given pages so the next <see cref="Scan"/> reports them
    /// again. Used when shipping a checkpoint failed: a dirty page is never lost.
    /// </summary>
    public void Invalidate(ReadOnlySpan<int> pages)
    {
        foreach (int p in pages)
            _forced[p] = true;
    }

    /// <summary>Forgets every recorded hash: the next scan reports every page.</summary>
    public void InvalidateAll() => Array.Fill(_forced, true);
}
