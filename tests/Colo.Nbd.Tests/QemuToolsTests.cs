using System.Text.Json;
using Colo.Nbd.Tests.Support;
using Xunit.Abstractions;

namespace Colo.Nbd.Tests;

/// <summary>Debian's QEMU 7.2 tools (qemu-img, qemu-io) as clients of our server, serving a raw file.</summary>
public sealed class QemuToolsTests(ITestOutputHelper output) : IDisposable
{
    private const long Size = 16 * 1024 * 1024;
    private readonly string _dir = Directory.CreateTempSubdirectory("colo-nbd-qemu-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private RawFileBlockDevice CreateImage(string name = "disk.raw") => RawFileBlockDevice.Create(Path.Combine(_dir, name), Size);

    [QemuToolsFact]
    public async Task QemuImgInfo_SeesTheExportSize()
    {
        using RawFileBlockDevice device = CreateImage();
        await using var h = new ServerHarness(device, output);
        (int exit, string text) = await Tool.RunAsync("qemu-img", "info", "--output=json", QemuImg.NbdUnixUri(h.SocketPath, h.Export));
        output.WriteLine(text);
        Assert.Equal(0, exit);
        using JsonDocument info = JsonDocument.Parse(text);
        Assert.Equal(Size, info.RootElement.GetProperty("virtual-size").GetInt64());
    }

    [QemuToolsFact]
    public async Task QemuIo_WritesAndReadsAPattern_AndEveryCommandKind()
    {
        using RawFileBlockDevice device = CreateImage();
        await using var h = new ServerHarness(device, output);
        (int exit, string text) = await Tool.RunAsync(
            "qemu-io", "-f", "raw",
            "-c", "write -P 0xab 0 1M",
            "-c", "read -P 0xab 0 1M",
            "-c", "write -f -P 0xcd 1M 64k", // FUA
            "-c", "flush",
            "-c", "write -z 2M 256k", // write zeroes, NO_HOLE
            "-c", "write -z -u 3M 256k", // write zeroes, may unmap
            "-c", "discard 4M 256k", // trim
            "-c", "read -P 0xcd 1M 64k",
            "-c", "read -P 0 2M 256k",
            "-c", "read -P 0 3M 256k",
            "-c", "aio_write -P 0x11 8M 64k", // a few requests in flight at once
            "-c", "aio_write -P 0x22 9M 64k",
            "-c", "aio_flush",
            "-c", "read -P 0x11 8M 64k",
            "-c", "read -P 0x22 9M 64k",
            QemuImg.NbdUnixUri(h.SocketPath, h.Export));
        output.WriteLine(text);
        Assert.Equal(0, exit);
        Assert.DoesNotContain("fail", text, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("error", text, StringComparison.OrdinalIgnoreCase);

        byte[] file = await File.ReadAllBytesAsync(device.Path);
        Assert.True(file.AsSpan(0, 1024 * 1024).IndexOfAnyExcept((byte)0xab) < 0);
        Assert.True(file.AsSpan(1024 * 1024, 65536).IndexOfAnyExcept((byte)0xcd) < 0);
    }

    [QemuToolsFact]
    public async Task QemuIo_OutOfRangeAccess_IsRefusedAndTheExportStaysUsable()
    {
        using RawFileBlockDevice device = CreateImage();
        await using var h = new ServerHarness(device, output);
        string uri = QemuImg.NbdUnixUri(h.SocketPath, h.Export);
        (int exit, string text) = await Tool.RunAsync("qemu-io", "-f", "raw", "-c", $"read 0 {Size + 4096}", uri);
        output.WriteLine(text);
        Assert.Contains("error", text, StringComparison.OrdinalIgnoreCase); // qemu-io checks the bound itself or gets EINVAL
        (exit, text) = await Tool.RunAsync("qemu-io", "-f", "raw", "-c", "write -P 0x42 0 4k", "-c", "read -P 0x42 0 4k", uri);
        Assert.Equal(0, exit);
    }

    [QemuToolsFact]
    public async Task QemuImgConvert_Qcow2IntoTheExport_AndTheExportOutToRaw()
    {
        // A qcow2 with recognisable content.
        string qcow2 = Path.Combine(_dir, "src.qcow2");
        await QemuImg.RunAsync(["create", "-q", "-f", "qcow2", qcow2, Size.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        (int exit, string text) = await Tool.RunAsync("qemu-io", "-f", "qcow2", "-c", "write -P 0x5e 1M 3M", "-c", "write -P 0x77 15M 1M", qcow2);
        Assert.Equal(0, exit);

        using RawFileBlockDevice device = CreateImage();
        await using var h = new ServerHarness(device, output);
        string uri = QemuImg.NbdUnixUri(h.SocketPath, h.Export);
        await QemuImg.ConvertAsync(qcow2, "qcow2", uri, "raw", TimeSpan.FromSeconds(60));
        byte[] served = await File.ReadAllBytesAsync(device.Path);
        Assert.True(served.AsSpan(0, 1024 * 1024).IndexOfAnyExcept((byte)0) < 0);
        Assert.True(served.AsSpan(1024 * 1024, 3 * 1024 * 1024).IndexOfAnyExcept((byte)0x5e) < 0);
        Assert.True(served.AsSpan(15 * 1024 * 1024).IndexOfAnyExcept((byte)0x77) < 0);

        string exported = Path.Combine(_dir, "out.raw");
        await QemuImg.ConvertAsync(uri, "raw", exported, "raw", TimeSpan.FromSeconds(60));
        Assert.Equal(served, await File.ReadAllBytesAsync(exported));

        (exit, text) = await Tool.RunAsync("qemu-img", "compare", "-f", "qcow2", "-F", "raw", qcow2, uri);
        output.WriteLine(text);
        Assert.Equal(0, exit);
    }

    [QemuToolsFact]
    public async Task QemuImg_ImportAndExportHelpers_RoundTripAQcow2()
    {
        string qcow2 = Path.Combine(_dir, "a.qcow2");
        await QemuImg.RunAsync(["create", "-q", "-f", "qcow2", qcow2, "4M"]);
        (int exit, _) = await Tool.RunAsync("qemu-io", "-f", "qcow2", "-c", "write -P 0x31 64k 64k", qcow2);
        Assert.Equal(0, exit);
        string raw = Path.Combine(_dir, "a.raw");
        await QemuImg.ImportToRawAsync(qcow2, "qcow2", raw);
        Assert.Equal(4 * 1024 * 1024, new FileInfo(raw).Length);
        string back = Path.Combine(_dir, "b.qcow2");
        await QemuImg.ExportFromRawAsync(raw, back, "qcow2");
        (exit, string text) = await Tool.RunAsync("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", qcow2, back);
        Assert.True(exit == 0, text);
    }

    [QemuToolsFact]
    public async Task QemuImg_Failure_IsReportedWithItsMessage()
    {
        QemuImgException ex = await Assert.ThrowsAsync<QemuImgException>(
            () => QemuImg.ImportToRawAsync(Path.Combine(_dir, "missing.qcow2"), "qcow2", Path.Combine(_dir, "x.raw")));
        Assert.Contains("missing.qcow2", ex.Message, StringComparison.Ordinal);
    }

    [QemuToolsFact]
    public async Task QemuNbdList_ListsTheExportWithItsSize()
    {
        if (QemuToolsFactAttribute.FindOnPath("qemu-nbd") is null)
        {
            return; // qemu-nbd ships with qemu-img in qemu-utils; absent only on unusual installs
        }

        using RawFileBlockDevice device = CreateImage();
        await using var h = new ServerHarness(device, output);
        (int exit, string text) = await Tool.RunAsync("qemu-nbd", "--list", "-k", h.SocketPath);
        output.WriteLine(text);
        Assert.Equal(0, exit);
        Assert.Contains("export: 'disk0'", text, StringComparison.Ordinal);
        Assert.Contains($"size:  {Size}", text, StringComparison.Ordinal);
    }

    [QemuToolsFact]
    public async Task QemuImg_Hanging_IsKilledAfterTheTimeout()
    {
        // A "server" that accepts and never says anything: qemu-img waits for the greeting forever.
        string path = Path.Combine(_dir, "mute.sock");
        using var listener = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        listener.Bind(new System.Net.Sockets.UnixDomainSocketEndPoint(path));
        listener.Listen(1);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        QemuImgException ex = await Assert.ThrowsAsync<QemuImgException>(
            () => QemuImg.RunAsync(["info", QemuImg.NbdUnixUri(path, "x")], TimeSpan.FromSeconds(1)));
        Assert.Contains("timed out", ex.Message, StringComparison.Ordinal);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30));
    }
}
