using System.Buffers;
using Colo.Checkpoint;

namespace Colo.Checkpoint.Tests;

public sealed class PageDeltaTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("colo-ckpt-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private GuestRam NewRam(string name, int pages) => GuestRam.Open(Path.Combine(_dir, name), (long)pages * GuestRam.PageSize);

    [Fact]
    public void Scan_FirstScanWithAll_ReportsEveryPage()
    {
        using var ram = NewRam("a", 64);
        var tracker = new PageTracker(64);
        var changed = new int[64];
        Assert.Equal(64, tracker.Scan(ram, changed, all: true));
        Assert.Equal(0, tracker.Scan(ram, changed));
    }

    [Fact]
    public void Scan_AfterWrites_ReportsExactlyTheWrittenPagesInOrder()
    {
        using var ram = NewRam("a", 128);
        var tracker = new PageTracker(128);
        var changed = new int[128];
        tracker.Scan(ram, changed, all: true);
        ram.Page(100)[17] = 1;
        ram.Page(3)[4095] = 9;
        ram.Page(64)[0] = 2;
        int n = tracker.Scan(ram, changed);
        Assert.Equal(new[] { 3, 64, 100 }, changed[..n]);
        Assert.Equal(0, tracker.Scan(ram, changed));
    }

    [Fact]
    public void Invalidate_FailedShipment_PagesReportedAgain()
    {
        using var ram = NewRam("a", 16);
        var tracker = new PageTracker(16);
        var changed = new int[16];
        tracker.Scan(ram, changed, all: true);
        ram.Page(5)[1] = 7;
        int n = tracker.Scan(ram, changed);
        Assert.Equal(1, n);
        tracker.Invalidate(changed.AsSpan(0, n));
        n = tracker.Scan(ram, changed);
        Assert.Equal(new[] { 5 }, changed[..n]);
    }

    [Fact]
    public void PageBatch_RoundTrip_AppliesPagesToCache()
    {
        using var cache = new MemoryCache(8 * GuestRam.PageSize);
        var page = new byte[GuestRam.PageSize];
        page[10] = 42;
        var batch = new byte[2 * PageBatch.RecordSize];
        PageBatch.WriteRecord(batch, 2, page);
        page[10] = 43;
        PageBatch.WriteRecord(batch.AsSpan(PageBatch.RecordSize), 7, page);
        Assert.Equal(2, cache.Apply(new ReadOnlySequence<byte>(batch)));
        Assert.Equal(42, cache.Page(2)[10]);
        Assert.Equal(43, cache.Page(7)[10]);
    }

    [Fact]
    public void PageBatch_SplitAcrossSegments_Applies()
    {
        using var cache = new MemoryCache(4 * GuestRam.PageSize);
        var page = Enumerable.Range(0, GuestRam.PageSize).Select(i => (byte)i).ToArray();
        var batch = new byte[PageBatch.RecordSize];
        PageBatch.WriteRecord(batch, 1, page);
        var first = new Segment(batch.AsMemory(0, 1000));
        var last = first.Append(batch.AsMemory(1000));
        cache.Apply(new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length));
        Assert.True(cache.Page(1).SequenceEqual(page));
    }

    [Theory]
    [InlineData(PageBatch.RecordSize - 1)]
    [InlineData(PageBatch.RecordSize + 5)]
    public void PageBatch_TruncatedRecord_Throws(int length)
    {
        using var cache = new MemoryCache(4 * GuestRam.PageSize);
        Assert.Throws<InvalidDataException>(() => cache.Apply(new ReadOnlySequence<byte>(new byte[length])));
    }

    [Fact]
    public void PageBatch_IndexPastRam_Throws()
    {
        using var cache = new MemoryCache(4 * GuestRam.PageSize);
        var batch = new byte[PageBatch.RecordSize];
        PageBatch.WriteRecord(batch, 4, new byte[GuestRam.PageSize]);
        Assert.Throws<InvalidDataException>(() => cache.Apply(new ReadOnlySequence<byte>(batch)));
    }

    [Fact]
    public void RestoreInto_WritesUnionOfPvmAndSvmChangedPages()
    {
        const int pages = 32;
        using var svm = NewRam("svm", pages);
        using var cache = new MemoryCache(pages * GuestRam.PageSize);
        // Epoch n: SVM RAM equals the cache.
        for (int i = 0; i < pages; i++) { svm.Page(i)[0] = (byte)i; cache.Page(i)[0] = (byte)i; }
        // PVM changed pages 1 and 2 (arrive in the cache); SVM changed pages 2 and 9 on its own.
        cache.Page(1)[5] = 0xAA;
        cache.Page(2)[5] = 0xBB;
        svm.Page(2)[6] = 0xCC;
        svm.Page(9)[7] = 0xDD;
        int written = cache.RestoreInto(svm);
        Assert.Equal(3, written);
        for (int i = 0; i < pages; i++)
            Assert.True(svm.Page(i).SequenceEqual(cache.Page(i)), $"page {i} differs after restore");
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory) => Memory = memory;

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory) { RunningIndex = RunningIndex + Memory.Length };
            Next = next;
            return next;
        }
    }
}
