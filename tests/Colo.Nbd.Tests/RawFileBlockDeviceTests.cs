namespace Colo.Nbd.Tests;

public sealed class RawFileBlockDeviceTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("colo-nbd-raw-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task WriteReadFlush_RoundTripsThroughTheFile(bool asyncIo)
    {
        string path = Path.Combine(_dir, "a.raw");
        using (RawFileBlockDevice device = RawFileBlockDevice.Create(path, 1024 * 1024, asyncIo))
        {
            Assert.Equal(1024 * 1024, device.Size);
            Assert.False(device.IsReadOnly);
            byte[] data = new byte[10000];
            new Random(5).NextBytes(data);
            await device.WriteAsync(1234, data, fua: false);
            await device.WriteAsync(50000, data, fua: true);
            await device.FlushAsync();
            byte[] back = new byte[10000];
            await device.ReadAsync(1234, back);
            Assert.Equal(data, back);
        }

        byte[] file = await File.ReadAllBytesAsync(path);
        Assert.Equal(1024 * 1024, file.Length);
        Assert.Equal(file.AsSpan(1234, 10000).ToArray(), file.AsSpan(50000, 10000).ToArray());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task WriteZeroes_ReadsBackZero_WithAndWithoutNoHole(bool noHole)
    {
        string path = Path.Combine(_dir, "z.raw");
        await File.WriteAllBytesAsync(path, Enumerable.Repeat((byte)0xcc, 3 * 1024 * 1024).ToArray());
        using RawFileBlockDevice device = RawFileBlockDevice.Open(path);
        await device.WriteZeroesAsync(4096, 2 * 1024 * 1024 + 100, noHole); // more than one 1 MiB fallback chunk
        byte[] back = new byte[3 * 1024 * 1024];
        await device.ReadAsync(0, back);
        Assert.All(back.AsSpan(0, 4096).ToArray(), b => Assert.Equal(0xcc, b));
        Assert.True(back.AsSpan(4096, (2 * 1024 * 1024) + 100).IndexOfAnyExcept((byte)0) < 0);
        Assert.All(back.AsSpan((2 * 1024 * 1024) + 4196).ToArray(), b => Assert.Equal(0xcc, b));
        Assert.Equal(3 * 1024 * 1024, new FileInfo(path).Length); // never changes the size
    }

    [Fact]
    public async Task Trim_PunchesAHole_AndKeepsTheSize()
    {
        string path = Path.Combine(_dir, "t.raw");
        await File.WriteAllBytesAsync(path, Enumerable.Repeat((byte)0xcc, 1024 * 1024).ToArray());
        using RawFileBlockDevice device = RawFileBlockDevice.Open(path);
        await device.TrimAsync(65536, 65536);
        byte[] back = new byte[65536];
        await device.ReadAsync(65536, back);

        // Trim is a hint; on file systems that punch holes (ext4, tmpfs, xfs) the range reads as zero.
        Assert.True(back.All(b => b == 0) || back.All(b => b == 0xcc));
        Assert.Equal(1024 * 1024, new FileInfo(path).Length);
    }

    [Fact]
    public async Task ReadOnly_OpensWithoutWriteAccess()
    {
        string path = Path.Combine(_dir, "r.raw");
        await File.WriteAllBytesAsync(path, [1, 2, 3, 4]);
        using RawFileBlockDevice device = RawFileBlockDevice.Open(path, readOnly: true);
        Assert.True(device.IsReadOnly);
        byte[] back = new byte[4];
        await device.ReadAsync(0, back);
        Assert.Equal([1, 2, 3, 4], back);
        await Assert.ThrowsAnyAsync<Exception>(async () => await device.WriteAsync(0, new byte[] { 9 }, fua: false));
    }

    [Fact]
    public async Task FileShortenedBehindOurBack_ReadsPastItsEndAsZero()
    {
        string path = Path.Combine(_dir, "s.raw");
        await File.WriteAllBytesAsync(path, Enumerable.Repeat((byte)7, 8192).ToArray());
        using RawFileBlockDevice device = RawFileBlockDevice.Open(path);
        using (FileStream fs = new(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite))
        {
            fs.SetLength(4096);
        }

        byte[] back = new byte[8192];
        back.AsSpan().Fill(0xff);
        await device.ReadAsync(0, back);
        Assert.All(back.AsSpan(0, 4096).ToArray(), b => Assert.Equal(7, b));
        Assert.All(back.AsSpan(4096).ToArray(), b => Assert.Equal(0, b));
    }
}
